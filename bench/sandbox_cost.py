"""Cost of the Landlock job sandbox: start-up, per training step, per file open.

Each measurement runs in a fresh worker process, unconfined and sandboxed alternately, on the
same machine in the same run. Prints a Markdown table (paste it into docs/BENCHMARKS.md).

    PYTHONPATH=src python bench/sandbox_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def worker(mode: str, preset: str) -> None:
    t0 = time.perf_counter()
    apply_ms = 0.0
    rules = 0
    if mode == "sandbox":
        from trainwarden.sandbox import SandboxPolicy, apply

        presets = ("python", "system", "torchrun") if preset == "torchrun" else ("python", "system")
        a = time.perf_counter()
        report = apply(SandboxPolicy(presets=presets))
        apply_ms = (time.perf_counter() - a) * 1e3
        rules = len(report.fs_rules)
    import torch  # imported after the sandbox, as a job would

    import_s = time.perf_counter() - t0
    target = os.path.join(os.path.dirname(os.__file__), "os.py")
    opens = []
    for _ in range(5):
        a = time.perf_counter()
        for _ in range(2000):
            with open(target, "rb"):
                pass
        opens.append((time.perf_counter() - a) / 2000 * 1e6)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randn(64, 1)
    steps = []
    for i in range(320):
        a = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward untyped
        opt.step()
        if i >= 20:
            steps.append((time.perf_counter() - a) * 1e3)
    print(
        json.dumps(
            {
                "apply_ms": apply_ms,
                "rules": rules,
                "import_s": import_s,
                "open_us": statistics.median(opens),
                "step_ms": statistics.median(steps),
            }
        )
    )


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, check=True, timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=["plain", "sandbox"])
    ap.add_argument("--preset", default="default", choices=["default", "torchrun"])
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.preset)
        return
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    results: dict[str, list[dict[str, float]]] = {}
    cli: dict[str, list[float]] = {"plain": [], "sandbox": []}
    with tempfile.TemporaryDirectory() as d:
        script = Path(d) / "job.py"
        script.write_text("print('ok')\n")
        workers = [
            ("plain", ["--worker", "plain"]),
            ("sandbox (python+system)", ["--worker", "sandbox"]),
            ("sandbox (+torchrun ports)", ["--worker", "sandbox", "--preset", "torchrun"]),
        ]
        for i in range(a.repeats):
            # rotate the order each repeat so that no worker always runs first or last
            for label, extra in workers[i % 3 :] + workers[: i % 3]:
                r = _run([sys.executable, __file__, *extra], env)
                results.setdefault(label, []).append(json.loads(r.stdout))
            for label, flags in (("plain", []), ("sandbox", ["--sandbox"])):
                t = time.perf_counter()
                _run([sys.executable, "-m", "trainwarden", "run", *flags, str(script)], env)
                cli[label].append(time.perf_counter() - t)

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    print(f"repeats: {a.repeats} (medians); load average {os.getloadavg()[0]:.1f}")
    print()
    print("| worker | apply() | fs rules | import torch after start | open+close | train step |")
    print("|---|---|---|---|---|---|")
    for label, _ in workers:
        print(
            f"| {label} | {med(label, 'apply_ms'):.1f} ms | {int(med(label, 'rules'))} "
            f"| {med(label, 'import_s'):.2f} s | {med(label, 'open_us'):.2f} µs "
            f"| {med(label, 'step_ms'):.3f} ms |"
        )
    print()
    print("| `python -m trainwarden run job.py` (trivial job, guard on) | wall time |")
    print("|---|---|")
    for label, times in cli.items():
        print(f"| {label} | {statistics.median(times):.2f} s |")


if __name__ == "__main__":
    main()
