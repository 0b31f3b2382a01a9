"""Regression tests named after published bypasses of peer scanners (picklescan, modelscan,
fickling, ModelAudit) and PyTorch's weights_only unpickler. Payloads are rebuilt opcode by
opcode here (benign: at most they would touch a canary file), never checked in as blobs."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.findings import Severity
from trainwarden.scan import analyze_pickle, scan_bytes
from trainwarden.scan._pickle_vm import PickleAnalysis
from trainwarden.scan._types import Verdict

from ._zipbuild import Member, build_zip


def rules(a: PickleAnalysis) -> set[str]:
    return {f.rule_id for f in a.findings}


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    return tmp_path / "canary"


def dangerous(a: PickleAnalysis, *qualnames: str) -> None:
    """Each named global was seen and classified DANGEROUS (not merely UNKNOWN or "some HIGH")."""
    verdicts = {g.qualname: g.verdict for g in a.globals}
    assert {q: verdicts.get(q) for q in qualnames} == dict.fromkeys(qualnames, Verdict.DANGEROUS)


def flagged(data: bytes, canary: Path) -> PickleAnalysis:
    a = analyze_pickle(data)
    assert a.max_severity is not None and a.max_severity >= Severity.HIGH, a.findings
    assert not canary.exists()
    return a


def test_modelscan_85_build_plants_names_then_dotted_stack_global(canary: Path) -> None:
    # BUILD slot-state writes "os"/"system" onto numpy.prod, then dotted GLOBALs read them back.
    data = (
        A.proto(4)
        + A.glob("numpy", "prod")
        + A.NONE
        + A.MARK
        + A.uni("a")
        + A.uni("os")
        + b"d"
        + A.TUPLE2
        + A.BUILD
        + A.POP
        + A.glob("numpy", "prod.a")
        + A.put(0)
        + A.glob("numpy", "prod.b")
        + A.put(1)
        + A.POP
        + A.POP
        + A.get(0)
        + A.get(1)
        + A.STACK_GLOBAL
        + A.uni(f"touch {canary}")
        + A.TUPLE1
        + A.REDUCE
        + A.STOP
    )
    a = flagged(data, canary)
    assert {"TWS-PKL-MUTATE-GLOBAL", "TWS-PKL-UNKNOWN"} <= rules(a)


def test_modelscan_89_numpy_builtins_dict_get(canary: Path) -> None:
    data = (
        A.proto(5)
        + A.glob("builtins", "dict.get")
        + A.glob("numpy", "__builtins__")
        + A.uni("exec")
        + A.TUPLE2
        + A.REDUCE
        + A.uni(f"__import__('os').system('touch {canary}')")
        + A.TUPLE1
        + A.REDUCE
        + A.STOP
    )
    a = flagged(data, canary)
    assert "TWS-PKL-DANGEROUS" in rules(a)  # numpy.__builtins__
    assert "TWS-PKL-CALL-COMPUTED" in rules(a)


def test_modelscan_330_numpy_size_builtins_build(canary: Path) -> None:
    data = (
        A.proto(4)
        + A.su("numpy")
        + A.su("size")
        + A.STACK_GLOBAL
        + A.MEMOIZE
        + A.MEMOIZE
        + A.su("numpy")
        + A.su("__builtins__")
        + A.STACK_GLOBAL
        + A.MEMOIZE
        + A.MEMOIZE
        + A.binget(1)
        + A.EMPTY_DICT
        + A.EMPTY_DICT
        + A.su("shape")
        + A.binget(3)
        + A.SETITEM
        + A.TUPLE2
        + A.BUILD
        + A.binget(1)
        + A.binget(1)
        + A.su("eval")
        + A.TUPLE2
        + A.REDUCE
        + A.su(f"__import__('os').system('touch {canary}')")
        + A.TUPLE1
        + A.REDUCE
        + A.STOP
    )
    a = flagged(data, canary)
    assert {"TWS-PKL-DANGEROUS", "TWS-PKL-MUTATE-GLOBAL"} <= rules(a)


def test_modelscan_331_importlib_getattr_string_join(canary: Path) -> None:
    data = (
        A.proto(4)
        + A.su("importlib")
        + A.su("import_module")
        + A.STACK_GLOBAL
        + A.MEMOIZE
        + A.su("builtins")
        + A.TUPLE1
        + A.REDUCE
        + A.MEMOIZE
        + A.su("builtins")
        + A.su("getattr")
        + A.STACK_GLOBAL
        + A.MEMOIZE
        + A.binget(2)
        + A.binget(1)
        + A.su("str")
        + A.TUPLE2
        + A.REDUCE
        + A.su("join")
        + A.TUPLE2
        + A.REDUCE
        + A.STOP
    )
    a = flagged(data, canary)
    dangerous(a, "importlib.import_module", "builtins.getattr")


def test_picklescan_22_memo_index_confusion(canary: Path) -> None:
    # The scanner must use the memo *value* stored under each key, not the last string seen.
    data = (
        A.proto(4)
        + A.su("collections")
        + A.binput(0)
        + A.su("OrderedDict")
        + A.binput(1)
        + A.POP
        + A.POP
        + A.su("subprocess")
        + A.binput(1)
        + A.POP
        + A.su("getoutput")
        + A.binput(0)
        + A.POP
        + A.binget(1)
        + A.binget(0)
        + A.STACK_GLOBAL
        + A.su(f"touch {canary}")
        + A.TUPLE1
        + A.REDUCE
        + A.STOP
    )
    a = flagged(data, canary)
    assert a.globals[0].qualname == "subprocess.getoutput"
    dangerous(a, "subprocess.getoutput")


def test_fickling_108_pty_spawn_via_obj(canary: Path) -> None:
    data = A.MARK + A.glob("pty", "spawn") + A.string(f"touch {canary}") + A.OBJ + A.STOP
    a = flagged(data, canary)
    assert a.globals[0].qualname == "pty.spawn"
    dangerous(a, "pty.spawn")


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("ensurepip", "_run_pip"),  # GHSA-xp4f-hrf8-rxw7
        ("mailcap", "findmatch"),  # modelscan #346
        ("_interpreters", "run_string"),  # GHSA-6ggj-6f2q-f7mx (fickling)
        ("_xxsubinterpreters", "run_string"),
        ("torch.utils.bottleneck.__main__", "run_cprofile"),  # GHSA-4r9r-ch6f-vxmx
        ("torch._dynamo.guards", "GuardBuilder.get"),  # GHSA-86cj-95qr-2p4f
        ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression"),
        ("torch.utils.collect_env", "run"),  # GHSA-f745-w6jp-hpxx
        ("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
        ("torch.jit.unsupported_tensor_ops", "execWrapper"),  # GHSA-vr7h-p6mm-wpmh
        ("torch.utils._config_module", "load_config"),  # GHSA-vv6j-3g6g-2pvj
        ("distutils.file_util", "write_file"),  # CVE-2025-10155/6
        ("_io", "FileIO"),
        ("asyncio.unix_events", "_UnixSubprocessTransport"),  # CVE-2025-10157
        ("numpy.f2py.crackfortran", "getlincoef"),
        ("pkgutil", "resolve_name"),  # GHSA-vvpj-8cmc-gx39
        ("profile", "Profile.run"),  # GHSA-7wx9-6375-f5wh
        ("uuid", "_get_command_stdout"),
        ("torch.distributed.rpc", "rpc_sync"),  # CVE-2024-5480
        ("torch.jit.annotations", "parse_type_line"),  # CVE-2022-45907
    ],
)
def test_published_dangerous_callables(module: str, name: str, canary: Path) -> None:
    data = A.proto(4) + A.su(module) + A.su(name) + A.STACK_GLOBAL
    data += A.su(f"touch {canary}") + A.TUPLE1 + A.REDUCE + A.STOP
    a = flagged(data, canary)
    assert "TWS-PKL-DANGEROUS" in rules(a), a.globals[0]
    dangerous(a, f"{module}.{name}")


def test_build_dunder_state_replaces_setstate(canary: Path) -> None:
    # BUILD #1 plants __setstate__ on an instance of an allowlisted class; BUILD #2 would call it.
    data = (
        A.proto(2)
        + A.glob("argparse", "Namespace")
        + A.EMPTY_TUPLE
        + A.REDUCE
        + A.NONE
        + A.EMPTY_DICT
        + A.su("__setstate__")
        + A.glob("collections", "OrderedDict")
        + A.SETITEM
        + A.TUPLE2
        + A.BUILD
        + A.EMPTY_DICT
        + A.BUILD
        + A.STOP
    )
    a = flagged(data, canary)
    assert "TWS-PKL-DUNDER-STATE" in rules(a)


def _storage(numel: int) -> bytes:
    return (
        A.MARK
        + A.su("storage")
        + A.glob("torch", "FloatStorage")
        + A.su("0")
        + A.su("cpu")
        + b"J"
        + struct.pack("<i", numel)
        + A.TUPLE
        + A.BINPERSID
    )


def _rebuild(numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    def ints(vals: tuple[int, ...]) -> bytes:
        return A.MARK + b"".join(b"J" + struct.pack("<i", v) for v in vals) + A.TUPLE

    return (
        A.proto(2)
        + A.glob("torch._utils", "_rebuild_tensor_v2")
        + A.MARK
        + _storage(numel)
        + b"J"
        + struct.pack("<i", offset)
        + ints(size)
        + ints(stride)
        + b"\x89"
        + A.glob("collections", "OrderedDict")
        + A.EMPTY_TUPLE
        + A.REDUCE
        + A.TUPLE
        + A.REDUCE
    )


def test_tensor_view_within_storage_is_clean() -> None:
    a = analyze_pickle(_rebuild(6, 0, (2, 3), (3, 1)) + A.STOP)
    assert a.findings == ()


@pytest.mark.parametrize(
    ("offset", "size", "stride"),
    [(0, (2, 3), (4, 1)), (5, (2,), (1,)), (0, (1000000,), (1000000,)), (-1, (2,), (1,))],
)
def test_tensor_view_outside_storage(
    offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> None:
    a = analyze_pickle(_rebuild(6, offset, size, stride) + A.STOP)
    assert "TWS-PKL-TENSOR-BOUNDS" in rules(a)


def test_cve_2026_24747_setitem_into_tensor(canary: Path) -> None:
    data = _rebuild(6, 0, (6,), (1,)) + A.binint1(0) + A.binint1(7) + A.SETITEM + A.STOP
    a = flagged(data, canary)
    assert "TWS-PKL-TENSOR-MUTATION" in rules(a)


def test_jfrog_non_standard_member_extension_and_crc(canary: Path) -> None:
    # CVE-2025-10155/10156 style: a torch zip whose pickle member is not named *.pkl and whose
    # CRC is wrong (zipfile refuses it; PyTorch's reader does not check).
    payload = A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP
    data = build_zip(
        [
            Member("model/data.bin", payload, crc=0xDEADBEEF),
            Member("model/version", b"3\n"),
        ]
    )
    r = scan_bytes(data, "model.pt")
    assert {"TWS-PKL-DANGEROUS", "TWS-ZIP-CRC"} <= {f.rule_id for f in r.findings}
    assert not canary.exists()


def test_nested_pickle_loads(canary: Path) -> None:
    inner = A.proto(2) + A.call_global("os", "system", f"touch {canary}") + A.STOP
    data = A.proto(2) + A.glob("pickle", "loads") + A.sbytes(inner[:255]) + A.TUPLE1 + A.REDUCE
    a = flagged(data + A.STOP, canary)
    assert "TWS-PKL-DANGEROUS" in rules(a)
    dangerous(a, "pickle.loads")


def test_joblib_array_bytes_hide_opcodes_for_plain_pickle(canary: Path) -> None:
    # joblib.load skips the padding and array bytes after a NumpyArrayWrapper; plain
    # pickle.load would execute them as opcodes. Both readings must be analysed.
    joblib = pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    buf = io.BytesIO()
    joblib.dump(np.zeros(200, dtype=np.uint8), buf)
    raw = bytearray(buf.getvalue())
    assert not scan_bytes(bytes(raw)).findings
    start = raw.index(b"\x00" * 200)
    pad_pos = next(start - 1 - n for n in range(16) if raw[start - 1 - n] == n)
    payload = A.POP + A.call_global("os", "system", f"touch {canary}") + A.STOP
    raw[pad_pos : pad_pos + len(payload)] = payload
    r = scan_bytes(bytes(raw))
    assert "TWS-PKL-DANGEROUS" in {f.rule_id for f in r.findings}
    assert not canary.exists()


def test_build_on_a_storage_from_persistent_load(canary: Path) -> None:
    data = A.proto(2) + _storage(4) + A.EMPTY_DICT + A.BUILD + A.STOP
    a = flagged(data, canary)
    assert "TWS-PKL-TENSOR-MUTATION" in rules(a)
