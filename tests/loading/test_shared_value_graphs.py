"""Pickles whose values share other values through the memo, level after level, so that a file of
a few hundred bytes loads as a small object whose tree has 2**45 nodes: hashing such a tuple (a
dict key, a set member) never ends, and neither does writing such an object out as a tree.

The loader refuses both within its limits. Runs that could hang on a regression are real
subprocesses under a CPU-time and address-space limit, so a regression fails instead of
stalling the suite."""

from __future__ import annotations

import dataclasses
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from trainwarden.drill._scan_corpus import asm as A
from trainwarden.loading import UnsafeModelError
from trainwarden.loading._convert import from_safetensors, to_safetensors
from trainwarden.loading._unpickler import Enforcer, restricted_loads
from trainwarden.scan import Limits, Policy

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def _python_limited(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    """``python -c CODE PATH`` with this checkout's ``src`` and the CPU and memory limits."""
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
        preexec_fn=_limited,
        check=False,
    )


def _cli(run_cli: RunCli, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(args, cwd=cwd, env={"TRAINWARDEN_DEBUG": ""}, preexec_fn=_limited)


def _tuple_pairs_by_opcode(depth: int) -> bytes:
    """t0 = (), t(i+1) = (t(i), t(i)) with TUPLE2; the last one becomes a dict key."""
    out = A.proto(2) + A.EMPTY_TUPLE + A.long_binput(0)
    for _ in range(depth):
        out += A.POP + A.long_binget(0) * 2 + A.TUPLE2 + A.long_binput(0)
    return out + A.POP + A.EMPTY_DICT + A.long_binget(0) + A.binint1(1) + A.SETITEM + A.STOP


def _tuple_pairs_by_call(depth: int) -> bytes:
    """The same tuples made by calling ``builtins.tuple`` on a list of two references (a call
    result, which the static pass cannot size); the last one is added to a set."""
    out = A.proto(2) + A.EMPTY_TUPLE + A.long_binput(0)
    for _ in range(depth):
        pair = A.EMPTY_LIST + A.MARK + A.long_binget(0) * 2 + A.APPENDS
        out += A.POP + A.glob("builtins", "tuple") + pair + b"\x85" + A.REDUCE + A.long_binput(0)
    return out + A.POP + A.EMPTY_SET + A.MARK + A.long_binget(0) + A.ADDITEMS + A.STOP


def _list_pairs(depth: int) -> bytes:
    """l0 = None, l(i+1) = [l(i), l(i)]: loads at once, 2**depth nodes as a tree."""
    out = A.proto(2) + A.NONE + A.long_binput(0)
    for _ in range(depth):
        out += A.POP + A.EMPTY_LIST + A.MARK + A.long_binget(0) * 2 + A.APPENDS
        out += A.long_binput(0)
    return out + A.STOP


def test_the_unpickler_sizes_tuples_itself(tmp_path: Path) -> None:
    # Small graphs load like pickle.load reads them; the limit is the policy's.
    import pickle

    data = _tuple_pairs_by_call(10)
    assert restricted_loads(data, Enforcer(Policy.default())) == pickle.loads(data)
    tight = dataclasses.replace(Policy.default(), limits=Limits(max_tuple_expansion=1000))
    with pytest.raises(UnsafeModelError, match="max_tuple_expansion"):
        restricted_loads(data, Enforcer(tight))


@pytest.mark.parametrize("build", [_tuple_pairs_by_opcode, _tuple_pairs_by_call])
def test_a_tuple_hashing_bomb_is_refused_by_the_unpickler(
    build: Callable[[int], bytes], tmp_path: Path, run_cli: RunCli
) -> None:
    # The restricted unpickler on its own (the guard's warn mode reaches it whatever the static
    # pass said): pickle.load would hash 2**45 tuples.
    src = tmp_path / "bomb.pkl"
    src.write_bytes(build(45))
    code = (
        "import sys\n"
        "from trainwarden.loading import UnsafeModelError\n"
        "from trainwarden.loading._unpickler import Enforcer, restricted_loads\n"
        "from trainwarden.scan import Policy\n"
        "try:\n"
        "    restricted_loads(open(sys.argv[1], 'rb').read(), Enforcer(Policy.default()))\n"
        "except UnsafeModelError as e:\n"
        "    print(e)\n"
    )
    proc = _python_limited(code, src)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "max_tuple_expansion" in proc.stdout
    # And through the command line: refused (exit 1) with one line, no traceback.
    r = _cli(run_cli, ["load", str(src)], tmp_path)
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "hashing it" in r.stderr
    assert "Traceback" not in r.stderr


def test_convert_refuses_an_object_of_shared_lists(tmp_path: Path, run_cli: RunCli) -> None:
    # Loads in microseconds (pickle.load agrees); written out as a tree it has 2**45 nodes.
    src = tmp_path / "lists.pkl"
    src.write_bytes(_list_pairs(45))
    out = tmp_path / "out.safetensors"
    r = _cli(run_cli, ["convert", str(src), "--to", "safetensors", "-o", str(out)], tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "expands to" in r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lists.pkl"]


def test_convert_keeps_objects_that_share_a_few_containers(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pt"
    config = {"lr": 0.1, "betas": [0.9, 0.99]}
    weight = torch.ones(2)
    torch.save({"w": weight, "a": config, "b": config, "pairs": _small_shared()}, src)
    result = to_safetensors(src, tmp_path / "out.safetensors")
    back = from_safetensors(result.output)
    assert back["a"] == back["b"] == config
    assert back["pairs"] == _small_shared()
    assert torch.equal(back["w"], weight)


def _small_shared() -> list[object]:
    level: list[object] = []
    for _ in range(10):
        level = [level, level]
    return level


def _shared_lists(depth: int, width: int) -> bytes:
    """Body (no STOP) leaving l(depth) on the stack: l(i+1) = [l(i)] * width, l0 = None."""
    out = A.proto(2) + A.NONE + A.long_binput(0)
    for _ in range(depth):
        out += A.POP + A.EMPTY_LIST + A.MARK + A.long_binget(0) * width + A.APPENDS
        out += A.long_binput(0)
    return out


def _load_in_subprocess(data: bytes, tmp_path: Path) -> str:
    """What ``restricted_loads(data)`` returns (its type) or raises, in a limited process."""
    src = tmp_path / "input.pkl"
    src.write_bytes(data)
    code = (
        "import sys\n"
        "from trainwarden.loading._unpickler import Enforcer, restricted_loads\n"
        "from trainwarden.scan import Policy\n"
        "try:\n"
        "    value = restricted_loads(open(sys.argv[1], 'rb').read(), Enforcer(Policy.default()))\n"
        "    print('loaded', type(value).__name__)\n"
        "except Exception as e:\n"
        "    print('raised', type(e).__name__)\n"
    )
    proc = _python_limited(code, src)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    return proc.stdout.strip()


@pytest.mark.parametrize("cls", ["tuple", "list"])
def test_allocating_a_value_type_from_shared_lists_is_judged_once_per_list(
    cls: str, tmp_path: Path
) -> None:
    # NEWOBJ of a builtin value type checks that its arguments are plain values: that check
    # walked 2**45 lists here. pickle.load allocates it at once, and so does this loader.
    data = _shared_lists(45, 2) + A.glob("builtins", cls) + A.long_binget(0) + b"\x85"
    assert _load_in_subprocess(data + A.NEWOBJ + A.STOP, tmp_path) == f"loaded {cls}"


def test_sparse_tensor_arguments_are_judged_once_per_list(tmp_path: Path) -> None:
    # The sparse rebuild's argument check went 5 lists deep over each list's items: 300**5
    # visits for 7.6 KB. Now each list is judged once and torch refuses the nonsense data.
    data = _shared_lists(5, 300) + A.glob("torch._utils", "_rebuild_sparse_tensor")
    data += A.glob("torch", "sparse_coo") + A.long_binget(0) + A.TUPLE2 + A.REDUCE + A.STOP
    assert _load_in_subprocess(data, tmp_path).startswith("raised ")
