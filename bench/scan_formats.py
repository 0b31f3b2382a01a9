"""Time ``trainwarden.scan.scan_path`` on large GGUF, safetensors and ONNX files.

The files are sparse (their tensor bytes are zeros the filesystem never stores), so building them
is instant; the handlers read only headers and structure through a memory map, so the scan time
should not grow with the tensor bytes. Prints a Markdown table.

    python bench/scan_formats.py [--gib 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trainwarden.scan import scan_path


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _sparse(path: Path, head: bytes, zeros: int, tail: bytes = b"") -> None:
    with path.open("wb") as f:
        f.write(head)
        f.seek(zeros, 1)
        f.write(tail)
        f.truncate()


def make_safetensors(path: Path, nbytes: int) -> None:
    n_tensors = 64
    per = nbytes // n_tensors // 4 * 4
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i in range(n_tensors):
        header[f"layer.{i}.weight"] = {
            "dtype": "F32",
            "shape": [per // 4],
            "data_offsets": [i * per, (i + 1) * per],
        }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    _sparse(path, struct.pack("<Q", len(raw)) + raw, per * n_tensors)


def make_gguf(path: Path, nbytes: int) -> None:
    def s(x: str) -> bytes:
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    tokens = [f"tok{i}" for i in range(32_000)]
    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    kv += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(tokens))
    kv += b"".join(s(t) for t in tokens)
    kv += s("tokenizer.chat_template") + struct.pack("<I", 8)
    kv += s("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] }}{% endfor %}")
    n_tensors = 64
    per = nbytes // n_tensors // 32 * 32
    infos = b""
    for i in range(n_tensors):
        infos += s(f"blk.{i}.w") + struct.pack("<IQIQ", 1, per // 4, 0, i * per)
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, 3) + kv + infos
    head += b"\0" * (-len(head) % 32)
    _sparse(path, head, per * n_tensors)


def make_onnx(path: Path, nbytes: int) -> None:
    # ModelProto{ir_version, graph{initializer{dims, data_type=FLOAT, name, raw_data}}, opset}
    n = nbytes // 4
    tensor_head = _varint(1 << 3) + _varint(n) + _varint(2 << 3) + _varint(1)
    tensor_head += _ld(8, b"W")
    raw_tag = _varint(9 << 3 | 2) + _varint(n * 4)
    tensor_len = len(tensor_head) + len(raw_tag) + n * 4
    init_tag = _varint(5 << 3 | 2) + _varint(tensor_len)
    graph_len = len(init_tag) + tensor_len
    head = _varint(1 << 3) + _varint(8) + _varint(7 << 3 | 2) + _varint(graph_len)
    head += init_tag + tensor_head + raw_tag
    tail = _ld(8, _varint(2 << 3) + _varint(18))
    _sparse(path, head, n * 4, tail)


def _time(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=float, default=2.0, help="size of each file in GiB")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    nbytes = int(args.gib * 1024**3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (
            ("model.safetensors", make_safetensors),
            ("model.gguf", make_gguf),
            ("model.onnx", make_onnx),
        ):
            path = Path(tmp) / name
            make(path, nbytes)
            report = scan_path(path, workers=1)
            fr = report.files[0]
            seconds = _time(lambda p=path: scan_path(p, workers=1), args.repeat)  # type: ignore[misc]
            rows.append((name, fr.size, ",".join(fr.formats), len(fr.findings), seconds))
    print(
        f"`python bench/scan_formats.py --gib {args.gib:g} --repeat {args.repeat}`, "
        f"{platform.machine()} {platform.processor() or ''} {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| file | size (GiB) | formats | findings | scan time (s, best of runs) |")
    print("|---|---|---|---|---|")
    for name, size, fmts, nf, sec in rows:
        print(f"| {name} | {size / 1024**3:.2f} | {fmts} | {nf} | {sec:.3f} |")


if __name__ == "__main__":
    main()
