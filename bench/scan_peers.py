"""Compare TrainWarden's scanner with picklescan, modelscan, fickling and ModelAudit on the corpus.

Every tool runs through its own command line, as a user would run it, and is judged by its exit
code (the CI contract of each tool: 0 clean, 1 findings, anything else an error). TrainWarden runs
once over the whole corpus (``--format json``, results mapped back to samples); the peers run once
per sample (fickling once per file, it has no directory mode), and picklescan's own directory scan
over the corpus is timed as well. The table goes into ``docs/BENCHMARKS.md`` between markers.

    python bench/scan_peers.py                 # build the corpus, run all tools, update the doc
    python bench/scan_peers.py --no-write      # print the table only
    python bench/scan_peers.py --startup 100   # only: scan a folder of 100 model files, TrainWarden
                                               # vs picklescan, side by side (start-up cost)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from trainwarden.drill import Corpus, Sample, canaries_fired

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"


def markers(section: str) -> tuple[str, str]:
    """The comment lines that delimit this script's table ``section`` in BENCHMARKS.md."""
    return (
        f"<!-- BEGIN scan_peers:{section} (written by bench/scan_peers.py) -->",
        f"<!-- END scan_peers:{section} -->",
    )


BIN = Path(sys.executable).parent


@dataclass
class Tally:
    """One tool's results over the corpus."""

    tool: str
    version: str
    detected: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    mode: str = ""

    def add(self, sample: Sample, outcome: str) -> None:
        """``outcome`` is "flagged", "clean" or "error"."""
        if outcome == "error":
            self.errors.append(sample.name)
        if sample.kind == "malicious":
            (self.detected if outcome == "flagged" else self.missed).append(sample.name)
        elif outcome == "flagged":
            self.false_positives.append(sample.name)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PROMPTFOO_DISABLE_TELEMETRY"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env.setdefault("NO_COLOR", "1")
    return env


def _run(cmd: Sequence[str], cwd: Path, timeout: float = 300.0) -> tuple[int, str]:
    try:
        p = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            env=_env(),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    return p.returncode, p.stdout + p.stderr


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _outcome(rc: int) -> str:
    return {0: "clean", 1: "flagged"}.get(rc, "error")


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _per_sample(
    tool: str,
    dist: str,
    samples: list[Sample],
    root: Path,
    scratch: Path,
    command: Callable[[Path, Path], list[str]],
    per_file: bool,
    workers: int,
) -> Tally:
    tally = Tally(tool, _version(dist), mode="per file" if per_file else "per sample")

    def one(sample: Sample) -> tuple[Sample, str]:
        path = sample.path(root)
        targets = _files(path) if per_file else [path]
        outcomes = []
        for i, target in enumerate(targets):
            work = scratch / f"{tool}-{sample.name}-{i}"
            work.mkdir(parents=True, exist_ok=True)
            rc, _ = _run(command(target, work), cwd=work)
            outcomes.append(_outcome(rc))
        if "flagged" in outcomes:
            return sample, "flagged"
        return sample, "error" if "error" in outcomes else "clean"

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        for sample, outcome in ex.map(one, samples):
            tally.add(sample, outcome)
    tally.wall_s = time.perf_counter() - start
    return tally


def _trainwarden(samples: list[Sample], root: Path, scratch: Path) -> tuple[Tally, int]:
    tally = Tally("trainwarden", _version("trainwarden"), mode="one call, whole corpus")
    cmd = [sys.executable, "-m", "trainwarden", "scan", "--format", "json", str(root)]
    start = time.perf_counter()
    rc, out = _run(cmd, cwd=scratch, timeout=600)
    tally.wall_s = time.perf_counter() - start
    try:
        report = json.loads(out[out.index("{") :] if "{" in out else out)
    except json.JSONDecodeError:
        for s in samples:
            tally.add(s, "error")
        print(f"trainwarden output is not JSON: {out[-300:]}", file=sys.stderr)
        return tally, rc
    bad = {
        f["path"]
        for f in report["files"]
        if any(x["severity"] in ("HIGH", "CRITICAL") for x in f["findings"])
    }
    noisy = {
        f["path"]
        for f in report["files"]
        if any(x["severity"] in ("MEDIUM", "HIGH", "CRITICAL") for x in f["findings"])
    }
    for s in samples:
        p = str(s.path(root))
        hits = bad if s.kind == "malicious" else noisy
        flagged = any(q == p or q.startswith(p + os.sep) for q in hits)
        tally.add(s, "flagged" if flagged else "clean")
    return tally, rc


def _dir_timing(cmd: list[str], scratch: Path) -> tuple[float, int]:
    start = time.perf_counter()
    rc, _ = _run(cmd, cwd=scratch, timeout=600)
    return time.perf_counter() - start, rc


def render(
    tallies: list[Tally],
    dir_times: list[tuple[str, float, int]],
    n_mal: int,
    n_clean: int,
    command: str,
    section: str = "main",
    title: str = "Scanner vs peers on the generated corpus",
) -> str:
    begin, end = markers(section)
    lines = [
        begin,
        f"## {title}",
        "",
        f"Corpus: {n_mal} malicious samples (each a distinct published technique) and {n_clean} "
        "clean files written by the real libraries (`trainwarden.drill.build_corpus`).",
        "Each tool runs through its CLI and is judged by its exit code (1 = findings). For "
        "TrainWarden a malicious sample counts as detected when one of its files has a HIGH or "
        "CRITICAL finding, and a clean one as a false positive at MEDIUM or above. "
        "A peer's error exit (crash, 'cannot parse', 'no supported files') is an error, not a "
        "detection; on a malicious sample it also counts as missed.",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {platform.machine()} Linux, {os.cpu_count()} CPU cores shared with other jobs "
        f"(timings are indicative), Python {platform.python_version()}",
        "",
        "| tool | version | mode | detected | missed | false positives | errors | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in tallies:
        lines.append(
            f"| {t.tool} | {t.version} | {t.mode} | {len(t.detected)}/{n_mal} | {len(t.missed)} | "
            f"{len(t.false_positives)}/{n_clean} | {len(t.errors)} | {t.wall_s:.1f} |"
        )
    lines += ["", "Directory mode over the whole corpus (one command, timing only):", ""]
    lines += ["| command | wall time (s) | exit code |", "|---|---|---|"]
    for cmd, secs, rc in dir_times:
        lines.append(f"| `{cmd}` | {secs:.2f} | {rc} |")
    lines += ["", "Missed samples and false positives per tool:", ""]
    for t in tallies:
        missed = ", ".join(t.missed) or "none"
        fps = ", ".join(t.false_positives) or "none"
        lines.append(f"- **{t.tool}** missed: {missed}. False positives: {fps}.")
    lines.append(end)
    return "\n".join(lines) + "\n"


def write_section(doc: Path, section: str, begin: str, end: str) -> None:
    """Replace the block between ``begin`` and ``end`` in ``doc`` (append it when absent)."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


def _build(root: Path, drill_module: Path | None) -> Corpus:
    if drill_module is None:
        return Corpus.build(root)
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tw_drill_copy", drill_module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    samples = mod.build_corpus(root.resolve())
    converted = {
        s.name: Sample(
            name=s.name,
            relpath=s.relpath,
            kind=s.kind,
            technique=s.technique,
            reference=s.reference,
            canary=s.canary,
        )
        for s in samples
    }
    return Corpus(root=root.resolve(), samples=converted)


def _model_folder(root: Path, n: int) -> None:
    """Write ``n`` small clean model files (torch zip, safetensors, .npy, pickle)."""
    import pickle

    import numpy as np
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True)
    for i in range(n):
        sd = {f"layer{j}.weight": torch.full((16, 16), float(i + j)) for j in range(4)}
        kind = i % 4
        if kind == 0:
            torch.save(sd, root / f"model{i}.pt")
        elif kind == 1:
            save_file(sd, str(root / f"model{i}.safetensors"))
        elif kind == 2:
            np.save(root / f"array{i}.npy", np.arange(256, dtype=np.float32) + i)
        else:
            with (root / f"state{i}.pkl").open("wb") as fh:
                pickle.dump({"step": i, "lr": 0.1, "names": [f"p{j}" for j in range(8)]}, fh)


def startup(n: int, repeats: int) -> str:
    """Time TrainWarden and picklescan over one folder of ``n`` model files, interleaved runs."""
    import statistics

    # `trainwarden` is the console script a user runs (as `picklescan` is); `python -m` adds the
    # cost of runpy. The last two rows are the floor: the version flag and a bare interpreter.
    script = BIN / "trainwarden"
    py = sys.executable
    tw = [str(script)] if script.exists() else [py, "-m", "trainwarden"]
    commands = {
        "trainwarden scan FOLDER": [*tw, "scan", "FOLDER"],
        "trainwarden scan --format json FOLDER": [*tw, "scan", "--format", "json", "FOLDER"],
        "python -m trainwarden scan FOLDER": [py, "-m", "trainwarden", "scan", "FOLDER"],
        "picklescan -p FOLDER": [str(BIN / "picklescan"), "-p", "FOLDER"],
        "trainwarden --version": [*tw, "--version"],
        "python -c pass": [py, "-c", "pass"],
    }
    import resource

    times: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    codes: dict[str, set[int]] = {k: set() for k in commands}
    # Installed packages run from compiled bytecode: let Python write it, and discard one warm-up
    # run of each command so neither tool pays for compiling or a cold page cache.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="tw-startup-") as tmp:
        folder = Path(tmp) / "models"
        _model_folder(folder, n)
        argv = {k: [str(folder) if a == "FOLDER" else a for a in v] for k, v in commands.items()}
        for cmd in argv.values():
            _run(cmd, cwd=Path(tmp))
        for _ in range(repeats):
            for label, cmd in argv.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                rc, _ = _run(cmd, cwd=Path(tmp))
                times[label].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[label].append(
                    after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                )
                codes[label].add(rc)
    begin, end = markers("startup")
    command = f"python bench/scan_peers.py --startup {n} --repeats {repeats}"
    lines = [
        begin,
        "## Start-up: one folder of model files, TrainWarden vs picklescan",
        "",
        f"A folder of {n} small clean model files (torch zip, safetensors, .npy, pickle), each "
        f"command run {repeats} times, interleaved, in one process of this script. Whole "
        "command, interpreter start and imports included: wall time, and CPU time (user + "
        "system of the command's process), which a busy shared machine disturbs far less. "
        "`trainwarden` is the installed console script, as `picklescan` is; `python -m "
        "trainwarden` adds runpy's cost; `trainwarden --version` and `python -c pass` are the "
        "floor (interpreter start).",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {platform.machine()} Linux, {os.cpu_count()} CPU cores shared with other jobs "
        f"(timings are indicative), Python {platform.python_version()}",
        "",
        "| command | wall median (s) | wall min (s) | CPU median (s) | CPU min (s) | exit codes |",
        "|---|---|---|---|---|---|",
    ]
    for label, ts in times.items():
        rcs = ",".join(str(c) for c in sorted(codes[label]))
        cs = cpu[label]
        lines.append(
            f"| `{label}` | {statistics.median(ts):.3f} | {min(ts):.3f} | "
            f"{statistics.median(cs):.3f} | {min(cs):.3f} | {rcs} |"
        )
    lines.append(end)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="parallel peer processes")
    parser.add_argument(
        "--tools",
        default="trainwarden,picklescan,modelscan,fickling,modelaudit",
        help="comma-separated subset of tools (picklescan-dir: only picklescan's directory timing)",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    parser.add_argument(
        "--drill-module",
        type=Path,
        help="build the corpus with this copy of scan_corpus.py (to re-run an older corpus)",
    )
    parser.add_argument("--section", default="main", help="name of the table in BENCHMARKS.md")
    parser.add_argument("--title", default="Scanner vs peers on the generated corpus")
    parser.add_argument(
        "--startup", type=int, metavar="N", help="only the start-up table over N model files"
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (--startup)")
    ns = parser.parse_args(argv)
    if ns.startup:
        table = startup(ns.startup, ns.repeats)
        print(table)
        if not ns.no_write:
            write_section(BENCHMARKS, table, *markers("startup"))
        return 0
    tools = ns.tools.split(",")
    with tempfile.TemporaryDirectory(prefix="tw-peers-") as tmp:
        base = Path(tmp)
        corpus = _build(base / "corpus", ns.drill_module)
        root = corpus.root
        scratch = base / "scratch"
        scratch.mkdir()
        samples = list(corpus.samples.values())
        tallies: list[Tally] = []
        dir_times: list[tuple[str, float, int]] = []
        if "trainwarden" in tools:
            tw, rc = _trainwarden(samples, root, scratch)
            tallies.append(tw)
            dir_times.append(("trainwarden scan --format json CORPUS", tw.wall_s, rc))
        peers: dict[str, tuple[str, Callable[[Path, Path], list[str]], bool]] = {
            "picklescan": (
                "picklescan",
                lambda p, w: [str(BIN / "picklescan"), "-p", str(p)],
                False,
            ),
            "modelscan": ("modelscan", lambda p, w: [str(BIN / "modelscan"), "-p", str(p)], False),
            "fickling": (
                "fickling",
                lambda p, w: [
                    str(BIN / "fickling"),
                    "--check-safety",
                    "--json-output",
                    str(w / "fickling.json"),
                    str(p),
                ],
                True,
            ),
            "modelaudit": (
                "modelaudit",
                lambda p, w: [str(BIN / "modelaudit"), "scan", "--format", "json", str(p)],
                False,
            ),
        }
        for tool, (dist, make_cmd, per_file) in peers.items():
            if tool not in tools:
                continue
            print(f"running {tool} over {len(samples)} samples...", file=sys.stderr)
            tallies.append(
                _per_sample(tool, dist, samples, root, scratch, make_cmd, per_file, ns.workers)
            )
        if "picklescan" in tools or "picklescan-dir" in tools:
            secs, rc = _dir_timing([str(BIN / "picklescan"), "-p", str(root)], scratch)
            dir_times.append(("picklescan -p CORPUS", secs, rc))
        fired = canaries_fired(root)
        if fired:
            print(f"CANARIES FIRED (a tool executed a payload): {fired}", file=sys.stderr)
        n_mal = len(corpus.of_kind("malicious"))
        n_clean = len(corpus.of_kind("clean"))
    command = "python bench/scan_peers.py " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    section = render(
        tallies, dir_times, n_mal, n_clean, command.strip(), section=ns.section, title=ns.title
    )
    print(section)
    if not ns.no_write:
        write_section(BENCHMARKS, section, *markers(ns.section))
    return 1 if fired else 0


if __name__ == "__main__":
    raise SystemExit(main())
