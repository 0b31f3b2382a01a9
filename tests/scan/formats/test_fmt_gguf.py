"""GGUF handler: spec-conformant files are clean; malformed headers and SSTI templates are found."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwarden.findings import Severity
from trainwarden.scan._formats._jinja import analyze_template
from trainwarden.scan._formats.gguf import HANDLER, parse_gguf

from .chat_templates import CLEAN, MALICIOUS
from .fmt_support import (
    GGUF_ARRAY,
    GGUF_BOOL,
    GGUF_FLOAT32,
    GGUF_FLOAT64,
    GGUF_INT32,
    GGUF_INT64,
    GGUF_STRING,
    GGUF_UINT8,
    GGUF_UINT32,
    GGUF_UINT64,
    RecordingContext,
    gguf_bytes,
    run_handler,
)


def _model(
    template: str | None = None,
    *,
    version: int = 3,
    extra: Sequence[tuple[str, int, object]] = (),
    tokens: Sequence[str] = ("<s>", "</s>", "a", "b", "\u2581c"),
) -> bytes:
    kv: list[tuple[str, int, object]] = [
        ("general.architecture", GGUF_STRING, "llama"),
        ("general.name", GGUF_STRING, "tiny"),
        ("general.alignment", GGUF_UINT32, 32),
        ("llama.context_length", GGUF_UINT32, 128),
        ("llama.rope.freq_base", GGUF_FLOAT32, 10000.0),
        ("general.file_type", GGUF_INT32, 0),
        ("tokenizer.ggml.add_bos_token", GGUF_BOOL, True),
        ("tokenizer.ggml.tokens", GGUF_ARRAY, (GGUF_STRING, list(tokens))),
        ("tokenizer.ggml.scores", GGUF_ARRAY, (GGUF_FLOAT32, [0.0, 0.0, -1.0, -2.0, -3.0])),
        ("tokenizer.ggml.token_type", GGUF_ARRAY, (GGUF_INT32, [3, 3, 1, 1, 1])),
        ("custom.nested", GGUF_ARRAY, (GGUF_ARRAY, [(GGUF_UINT8, [1, 2]), (GGUF_UINT8, [])])),
        ("custom.u64", GGUF_UINT64, 2**40),
        ("custom.i64", GGUF_INT64, -5),
        ("custom.f64", GGUF_FLOAT64, 0.5),
        *extra,
    ]
    if template is not None:
        kv.append(("tokenizer.chat_template", GGUF_STRING, template))
    tensors = [
        ("token_embd.weight", (4, 5), np.ones((5, 4), dtype=np.float32)),
        ("output_norm.weight", (4,), np.zeros(4, dtype=np.float32)),
    ]
    return gguf_bytes(kv, tensors, version=version)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_parser_reads_every_value_type(version: int) -> None:
    parsed = parse_gguf(_model(CLEAN["llama3"], version=version))
    assert parsed.version == version
    assert parsed.metadata["tokenizer.ggml.tokens"][-1] == "\u2581c"
    assert parsed.metadata["custom.nested"] == [[1, 2], []]
    assert parsed.metadata["custom.i64"] == -5
    assert [t.name for t in parsed.tensors] == ["token_embd.weight", "output_norm.weight"]
    assert parsed.tensors[1].offset % 32 == 0


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_real_model_chat_templates_are_clean(name: str) -> None:
    ctx = run_handler(HANDLER, _model(CLEAN[name]))
    assert ctx.findings == [], [f.message for f in ctx.findings]


def test_clean_templates_compile_with_jinja() -> None:
    # The clean corpus must be valid Jinja, otherwise "no finding" would prove nothing.
    jinja2 = pytest.importorskip("jinja2.sandbox")
    env = jinja2.ImmutableSandboxedEnvironment()
    for text in CLEAN.values():
        env.from_string(text)


# Techniques whose findings are not exactly their own rule at CRITICAL: every rule each one
# raises, at the highest severity it reaches (fragments joined with `~`, template-loading tags
# and unterminated syntax are HIGH).
_C, _H = Severity.CRITICAL, Severity.HIGH
_RAISED: dict[str, dict[str, Severity]] = {
    "import-macro-module": {"TWS-TPL-001": _C, "TWS-TPL-003": _H},
    "include-local-file": {"TWS-TPL-003": _H},
    "reversed-dunder": {"TWS-TPL-001": _C, "TWS-TPL-002": _C},
    "tilde-concatenated-fragments": {"TWS-TPL-002": _H},
    "unterminated-block": {"TWS-TPL-004": _H},
    "unterminated-string": {"TWS-TPL-004": _H},
}


@pytest.mark.parametrize("technique", sorted(MALICIOUS))
def test_ssti_templates_are_detected(technique: str, canary: Path) -> None:
    template, rule = MALICIOUS[technique]
    template = template.replace("CANARY", str(canary))
    ctx = run_handler(HANDLER, _model(template))
    raised: dict[str, Severity] = {}
    for f in ctx.findings:
        raised[f.rule_id] = max(f.severity, raised.get(f.rule_id, f.severity))
    # exactly the technique's own rule (plus the ones listed), at its exact severity
    assert raised == _RAISED.get(technique, {rule: Severity.CRITICAL}), [
        f.message for f in ctx.findings
    ]
    assert rule in raised


def test_template_under_named_variant_key_is_checked(canary: Path) -> None:
    bad = MALICIOUS["lipsum-globals-os"][0].replace("CANARY", str(canary))
    data = _model(CLEAN["llama3"], extra=[("tokenizer.chat_template.tool_use", GGUF_STRING, bad)])
    ctx = run_handler(HANDLER, data)
    assert {f.evidence["key"] for f in ctx.findings} == {"tokenizer.chat_template.tool_use"}


def test_non_string_template_is_reported() -> None:
    ctx = run_handler(HANDLER, _model(extra=[("tokenizer.chat_template", GGUF_UINT32, 7)]))
    assert ctx.rule_ids == {"TWS-GGUF-002"}


def test_template_analysis_ignores_comments_and_raw_blocks() -> None:
    assert analyze_template("{# {{ lipsum.__globals__ }} #}{% raw %}{{ self }}{% endraw %}hi") == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:4] + struct.pack("<I", 9) + d[8:],  # unsupported version
        lambda d: d[:16] + struct.pack("<Q", 2**62) + d[24:],  # absurd metadata count
        lambda d: d[:8] + struct.pack("<Q", 2**40) + d[16:],  # absurd tensor count
        lambda d: d[: len(d) // 3],  # truncated inside the metadata
    ],
    ids=["bad-version", "kv-count-overflow", "tensor-count-overflow", "truncated"],
)
def test_malformed_headers_fail_closed(mutate: Callable[[bytes], bytes]) -> None:
    data = mutate(_model(CLEAN["gemma"]))
    ctx = run_handler(HANDLER, data)
    assert ctx.rule_ids == {"TWS-GGUF-001"}
    assert ctx.max_severity() == Severity.HIGH


def test_huge_string_length_is_bounded() -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**63) + b"key"
    ctx = run_handler(HANDLER, data)
    assert ctx.rule_ids == {"TWS-GGUF-001"}


def test_too_many_dims_fail_closed() -> None:
    data = bytearray(_model())
    name = b"output_norm.weight"
    at = data.index(name) + len(name)
    data[at : at + 4] = struct.pack("<I", 5)
    ctx = run_handler(HANDLER, bytes(data))
    assert ctx.rule_ids == {"TWS-GGUF-001"}
    assert ctx.max_severity() == Severity.HIGH


def test_sniff_is_by_magic_only() -> None:
    assert not HANDLER.sniff(b"GGML" + b"\0" * 20)
    assert not HANDLER.sniff(b"\x80\x04")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=1, max_value=10**6),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=6),
)
def test_mutated_files_never_raise(cut: int, flips: list[tuple[int, int]]) -> None:
    base = bytearray(_model(CLEAN["chatml-qwen"]))
    for at, x in flips:
        base[at % len(base)] ^= x
    data = bytes(base[: len(base) - cut % len(base)])
    ctx = RecordingContext()
    if HANDLER.sniff(data):
        HANDLER.scan(data, "<fuzz>", ctx)
        if not flips:
            assert "TWS-GGUF-001" in ctx.rule_ids


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_template_analysis_never_raises(text: str) -> None:
    for issue in analyze_template(text):
        assert issue.kind in {"escape", "obfuscation", "loader", "syntax"}


def test_malicious_templates_are_valid_jinja() -> None:
    # Each payload must be something Jinja accepts (the syntax-error cases excepted).
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()  # compiled only, never rendered
    for template, rule in MALICIOUS.values():
        if rule != "TWS-TPL-004":
            env.from_string(template)


def test_dunder_special_token_is_reported() -> None:
    extra: list[tuple[str, int, object]] = [
        ("tokenizer.ggml.bos_token_id", GGUF_UINT32, 0),
        ("tokenizer.ggml.eos_token_id", GGUF_UINT32, 4),
    ]
    assert run_handler(HANDLER, _model(CLEAN["llama3"], extra=extra)).findings == []
    parlai = ["__null__", "__start__", "__end__", "__unk__", "__end__"]  # BlenderBot's specials
    assert run_handler(HANDLER, _model(CLEAN["llama3"], extra=extra, tokens=parlai)).findings == []
    evil = _model(CLEAN["llama3"], extra=extra, tokens=["<s>", "</s>", "a", "b", "__globals__"])
    ctx = run_handler(HANDLER, evil)
    assert ctx.rule_ids == {"TWS-GGUF-003"}
    assert ctx.findings[0].evidence["key"] == "tokenizer.ggml.eos_token_id"
