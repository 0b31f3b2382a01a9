"""TorchScript archives: code reviewed against the side-effect-free operator allowlist.

A clean ``torch.jit.save`` of an ordinary module is at most LOW; code that calls anything outside
the allowlist is HIGH, however the call is spelled (a temporary bound to the operator, a custom
operator namespace, a method named like an excluded operator). Archives are written by torch and
their code members edited as text; nothing here is loaded with ``torch.jit.load``.
"""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from trainwarden.findings import Severity
from trainwarden.scan import scan_bytes
from trainwarden.scan._torchscript import review
from trainwarden.scan._torchscript_ops import ALLOWED_OPS, EXCLUDED_OPS

from ._torchscript_ops_gen import EXCLUDED, derive

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning"),
]


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.bn = torch.nn.BatchNorm2d(2)
        self.lin = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.drop = torch.nn.Dropout()
        self.attn = torch.nn.MultiheadAttention(4, 2)
        self.rnn = torch.nn.LSTM(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        z = torch.nn.functional.gelu(self.norm(self.lin(self.drop(y))))
        out: torch.Tensor = self.rnn(z.reshape(-1, 1, 4))[0]
        return out


def _archive(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def _edit(data: bytes, edit: object) -> bytes:
    """Rewrite the archive's first code member (its name depends on TorchScript's mangling)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    target = next(n for n in src.namelist() if "/code/" in n and n.endswith(".py"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == target:
                raw = edit(raw.decode()).encode()  # type: ignore[operator]
            dst.writestr(info, raw)
    return out.getvalue()


def test_operator_allowlist_matches_the_torch_registry() -> None:
    allowed, unreviewed = derive()
    assert unreviewed == [], "review these str arguments in tests/scan/_torchscript_ops_gen.py"
    assert sorted(ALLOWED_OPS) == allowed
    assert EXCLUDED_OPS == EXCLUDED
    assert not (ALLOWED_OPS & EXCLUDED_OPS)
    assert {"from_file", "save", "rpc_sync", "PythonOp"} <= EXCLUDED_OPS


def test_clean_archive_of_ordinary_layers_is_at_most_low() -> None:
    report = scan_bytes(_archive(_Net()), "net.pt")
    assert [f.rule_id for f in report.findings] == ["TWS-TORCHSCRIPT"]
    assert report.max_severity == Severity.LOW


def _setstate_module_code() -> str:
    return (
        "  def helper(self: __torch__.M, p: str) -> Tensor:\n"
        "    _0 = torch.from_file\n"
        "    return _0(p, True, 4)\n"
    )


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param(
            lambda code: code + "\ndef f(p: str) -> Tensor:\n  return torch.from_file(p)\n",
            id="direct",
        ),
        pytest.param(
            lambda code: (
                code + "\ndef f(p: str) -> Tensor:\n  _0 = torch.from_file\n  return _0(p)\n"
            ),
            id="bound-to-a-temporary",
        ),
        pytest.param(
            lambda code: code + "\ndef f(x: Tensor) -> Tensor:\n  return ops.evil_lib.run(x)\n",
            id="custom-op-namespace",
        ),
        pytest.param(
            lambda code: code + "\ndef f(x: Tensor) -> None:\n  torch.save(x, 'out')\n",
            id="save",
        ),
        pytest.param(lambda code: code + "\ndef f(x: Tensor) -> None:\n  print(x)\n", id="print"),
        pytest.param(
            lambda code: (
                code
                + "\nclass S(Module):\n  def from_file(self: S) -> None:\n    return None\n"
                + "def f(s: __torch__.S, t: Tensor) -> None:\n  t.from_file()\n"
            ),
            id="method-named-like-an-excluded-op",
        ),
        pytest.param(lambda code: code + "\ndef f(:\n", id="unparseable"),
    ],
)
def test_code_outside_the_allowlist_is_high(patch: object) -> None:
    data = _edit(_archive(torch.nn.Linear(2, 2)), patch)
    report = scan_bytes(data, "edited.pt")
    assert "TWS-TORCHSCRIPT-OP" in {f.rule_id for f in report.findings}
    assert report.max_severity is not None and report.max_severity >= Severity.HIGH


def test_torch_classes_in_the_archive_pickles_are_not_critical() -> None:
    report = scan_bytes(_archive(_Net()), "net.pt")
    assert all(f.severity < Severity.MEDIUM for f in report.findings)


def test_torch_names_outside_a_torchscript_archive_stay_dangerous() -> None:
    # A plain pickle naming __torch__.M is resolved by Python's import system, not TorchScript.
    data = b"\x80\x02c__torch__\nM\n)\x81."
    report = scan_bytes(data, "plain.pkl")
    assert report.max_severity == Severity.CRITICAL


def test_review_reports_the_defined_classes() -> None:
    code = b"class K(Module):\n  def forward(self: K) -> int:\n    return len([1])\n"
    findings, classes = review({"a/code/__torch__/x.py": code}, "a.pt")
    assert classes == ["__torch__.x.K"]
    assert [f.severity for f in findings] == [Severity.LOW]
