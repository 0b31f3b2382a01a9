"""Peak memory and temporary disk of ``trainwarden scan`` on hostile and very large inputs.

Builds each case in a temporary directory (sparse files where the content may be zeros), runs
``python -m trainwarden scan`` on it in a child process, and measures the child's peak RSS (its
``VmHWM``, polled every 20 ms until it exits) and the most temporary-file space it held at once
(its open files under a private TMPDIR, deleted or not, polled every 20 ms). With
``--baseline-src`` the same command runs with another source tree (for example the previous
release) side by side; a baseline child whose RSS passes ``--baseline-kill-mib`` is killed and
reported as such, so the machine is never at risk.

Targets: peak RSS below 512 MiB and temporary disk below 1 GiB in every case.

    python bench/hostile_inputs.py                       # all cases, 2 GiB real checkpoint
    python bench/hostile_inputs.py --checkpoint-gib 5 --baseline-src /path/to/old/src
    python bench/hostile_inputs.py --only zip_1000_to_1 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
BEGIN = "<!-- BEGIN hostile_inputs (written by bench/hostile_inputs.py) -->"
END = "<!-- END hostile_inputs -->"
MIB = 1024 * 1024


def _s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_array(path: Path, size: int, elem_type: int) -> list[str]:
    """A sparse GGUF of ``size`` bytes whose one metadata array fills the file with zeros:
    ``elem_type`` 0 makes u8 zeros, 8 makes empty strings (an 8-byte zero length each)."""
    width = 1 if elem_type == 0 else 8
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    head += _s("general.architecture") + struct.pack("<I", 8) + _s("llama")
    key = _s("tokenizer.ggml.tokens" if elem_type == 8 else "custom.big")
    n = (size - len(head) - len(key) - 16) // width
    head += key + struct.pack("<IIQ", 9, elem_type, n)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + n * width)
    return ["scan", str(path)]


def zip_ratio(path: Path, member_gib: float) -> list[str]:
    """One deflated member of ``member_gib`` GiB of zeros (about 1000:1)."""
    usize = int(member_gib * 1024) * MIB
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * (16 * MIB)
    crc = 0
    body = bytearray()
    for _ in range(usize // len(chunk)):
        body += comp.compress(chunk)
        crc = zlib.crc32(chunk, crc)
    body += comp.flush()
    name = b"weights.bin"
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 20
    )
    extra = struct.pack("<2H2Q", 1, 16, usize, len(body))
    data = local + name + extra + bytes(body)
    cextra = struct.pack("<2H2Q", 1, 16, usize, len(body))
    cen = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        45,
        45,
        0,
        8,
        0,
        0,
        crc,
        0xFFFFFFFF,
        0xFFFFFFFF,
        len(name),
        len(cextra),
        0,
        0,
        0,
        0,
        0,
    )
    cen += name + cextra
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cen), len(data), 0)
    path.write_bytes(data + cen + end)
    return ["scan", str(path)]


def zip_fanout(path: Path) -> list[str]:
    """Overlapping members: 1,000 directory entries sharing one 16 MiB deflated member."""
    from trainwarden.drill._samples_containers import _zip_raw

    usize = 16 * MIB
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = comp.compress(b"\0" * usize) + comp.flush()
    crc = zlib.crc32(b"\0" * usize)
    path.write_bytes(_zip_raw([("layer.bin", 0)] * 1000, body, usize, crc))
    return ["scan", str(path)]


def sparse_hash(path: Path, gib: float) -> list[str]:
    with path.open("wb") as f:
        f.truncate(int(gib * 1024) * MIB)
    return ["scan", "--hash", str(path)]


def checkpoint(path: Path, gib: float) -> list[str]:
    """A real torch.save checkpoint of ``gib`` GiB, written from tensors mapped from a sparse
    file (so building it needs no RAM of that size)."""
    import torch

    per = 64 * MIB
    n = max(1, round(gib * 1024 * MIB / per))
    backing = path.with_suffix(".backing")
    with backing.open("wb") as f:
        f.truncate(per)
    # Distinct storages (one shared storage would be written once), each a mapping of the same
    # sparse file: the checkpoint holds n x 64 MiB while this process holds one page cache copy.
    state = {
        f"layer{i}.weight": torch.from_file(str(backing), shared=True, size=per // 4)
        for i in range(n)
    }
    torch.save(state, path)
    del state
    backing.unlink()
    return ["scan", "--hash", str(path)]


def _measure(args: list[str], src: Path, tmp: Path, kill_mib: int | None) -> tuple[str, str, str]:
    """(peak RSS MiB, peak temporary disk MiB, exit code) of one ``trainwarden`` child."""
    env = dict(os.environ, PYTHONPATH=str(src), TMPDIR=str(tmp))
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainwarden", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak_tmp = 0
    peak_rss_kib = 0
    killed = False
    done = threading.Event()

    def poll() -> None:
        nonlocal peak_tmp, peak_rss_kib, killed
        fd_dir = Path(f"/proc/{proc.pid}/fd")
        while not done.is_set():
            files: dict[tuple[int, int], int] = {}
            try:
                for fd in fd_dir.iterdir():
                    try:
                        target = os.readlink(fd)
                        if target.startswith(str(tmp)):
                            st = os.stat(fd)
                            # One file may be open twice (an mmap holds a duplicate descriptor).
                            files[(st.st_dev, st.st_ino)] = st.st_blocks * 512
                    except OSError:
                        continue
                status = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
                if hwm:
                    peak_rss_kib = max(peak_rss_kib, int(hwm.group(1)))
                m = re.search(r"VmRSS:\s+(\d+) kB", status)
                if kill_mib is not None and m and int(m.group(1)) > kill_mib * 1024:
                    killed = True
                    proc.send_signal(signal.SIGKILL)
            except OSError:
                pass
            peak_tmp = max(peak_tmp, sum(files.values()))
            time.sleep(0.02)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    # Peak RSS is the child's own high-water mark (VmHWM, polled until it exits): wait4's
    # ru_maxrss would include the parent's memory at fork time, which Linux keeps across exec.
    _, status = os.waitpid(proc.pid, 0)
    done.set()
    watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = peak_rss_kib / 1024
    if killed:
        return f"> {kill_mib} (killed)", f"{peak_tmp / MIB:.0f}", "killed"
    return f"{rss:.0f}", f"{peak_tmp / MIB:.0f}", str(proc.returncode)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint-gib", type=float, default=2.0)
    ap.add_argument("--zip-member-gib", type=float, default=10.0)
    ap.add_argument("--hash-gib", type=float, default=20.0)
    ap.add_argument("--baseline-src", type=Path, help="another source tree to run side by side")
    ap.add_argument("--baseline-kill-mib", type=int, default=2048)
    ap.add_argument("--only", help="run one case")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    cases: list[tuple[str, str, Callable[[Path], list[str]]]] = [
        (
            "gguf_256mb_u8_array",
            "GGUF, 256 MiB u8 metadata array",
            lambda p: gguf_array(p, 256 * MIB, 0),
        ),
        (
            "gguf_256mb_empty_strings",
            "GGUF, 33M empty strings",
            lambda p: gguf_array(p, 256 * MIB, 8),
        ),
        (
            "gguf_8gb_u8_array",
            "GGUF, 8 GiB u8 array (sparse)",
            lambda p: gguf_array(p, 8192 * MIB, 0),
        ),
        (
            "zip_1000_to_1",
            f"ZIP, one member {args.zip_member_gib:g} GiB of zeros (1000:1)",
            lambda p: zip_ratio(p, args.zip_member_gib),
        ),
        ("zip_fanout", "ZIP, 1,000 overlapping 16 MiB members", zip_fanout),
        (
            "hash_sparse",
            f"--hash of a {args.hash_gib:g} GiB sparse file",
            lambda p: sparse_hash(p, args.hash_gib),
        ),
        (
            "torch_checkpoint",
            f"real torch.save checkpoint, {args.checkpoint_gib:g} GiB, --hash",
            lambda p: checkpoint(p, args.checkpoint_gib),
        ),
    ]
    if args.only:
        cases = [c for c in cases if c[0] == args.only]
    src = REPO / "src"
    rows = []
    for name, what, build in cases:
        work = Path(tempfile.mkdtemp(prefix=f"tw-hostile-{name}-"))
        try:
            target = work / f"{name}.bin"
            t0 = time.monotonic()
            cli = build(target)
            size = target.stat().st_size
            built = time.monotonic() - t0
            tmp = work / "tmp"
            tmp.mkdir()
            t0 = time.monotonic()
            rss, disk, code = _measure(cli, src, tmp, None)
            took = time.monotonic() - t0
            base = ("", "", "")
            if args.baseline_src:
                base = _measure(cli, args.baseline_src, tmp, args.baseline_kill_mib)
            rows.append((what, size, rss, disk, code, took, *base))
            print(
                f"{name}: {size / MIB:.0f} MiB built in {built:.0f}s; rss {rss} MiB, "
                f"tmp {disk} MiB, exit {code}, {took:.1f}s; baseline {base}",
                flush=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    head = "| case | file MiB | peak RSS MiB | temp disk MiB | exit | seconds |"
    sep = "|---|---:|---:|---:|---:|---:|"
    if args.baseline_src:
        head += " baseline RSS MiB | baseline temp MiB | baseline exit |"
        sep += "---:|---:|---:|"
    lines = [
        BEGIN,
        "`python bench/hostile_inputs.py "
        f"--checkpoint-gib {args.checkpoint_gib:g} --zip-member-gib {args.zip_member_gib:g} "
        f"--hash-gib {args.hash_gib:g}"
        + (f" --baseline-src {args.baseline_src}" if args.baseline_src else "")
        + f"` ({datetime.date.today().isoformat()}; 2-core shared machine)",
        "",
        head,
        sep,
    ]
    for what, size, rss, disk, code, took, *base_cols in rows:
        line = f"| {what} | {size / MIB:.0f} | {rss} | {disk} | {code} | {took:.1f} |"
        if args.baseline_src:
            line += f" {base_cols[0]} | {base_cols[1]} | {base_cols[2]} |"
        lines.append(line)
    lines += [
        "",
        "Targets: peak RSS < 512 MiB and temporary disk < 1024 MiB in every case. Exit 1 means "
        "the scan reported a finding at or above HIGH (a limit, a malformed file).",
        END,
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write and not args.only:
        text = BENCHMARKS.read_text()
        if BEGIN in text:
            text = re.sub(
                re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S
            )
        else:
            text = (
                text.rstrip("\n")
                + "\n\n## Hostile inputs: memory and temporary disk\n\n"
                + table
                + "\n"
            )
        BENCHMARKS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
