"""T2 for the drill: an edited framework file in a throwaway environment the drill makes.

:func:`make_env` creates a fresh virtual environment (no pip, no system site-packages) and
installs in it, as a wheel installer would (files plus a ``RECORD`` with their sha256), a small
stand-in of the framework modules a saboteur edits: the optimizer update, the seeding function and
the data loader's batching (``drill_framework``, pure Python). The real installed torch is never
touched. :data:`EDITS` are the edits; :func:`probe` runs the stand-in in the environment's own
interpreter to show that an edit changes what training would do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EDITS", "PACKAGE", "Edit", "apply_edit", "job_environ", "make_env", "probe"]

PACKAGE = "drill_framework"
_VERSION = "1.0"

_SOURCES: dict[str, str] = {
    "__init__.py": '"""Stand-in of a training framework (drill only)."""\n',
    "optim.py": '''\
"""The optimizer update (stand-in of torch.optim.AdamW's step)."""


def adamw_update(param, grad, m, v, step, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, wd=0.01):
    b1, b2 = betas
    out = []
    for i, (p, g) in enumerate(zip(param, grad)):
        m[i] = b1 * m[i] + (1 - b1) * g
        v[i] = b2 * v[i] + (1 - b2) * g * g
        m_hat = m[i] / (1 - b1**step)
        v_hat = v[i] / (1 - b2**step)
        p = p * (1 - lr * wd)
        p = p - lr * m_hat / (v_hat**0.5 + eps)
        out.append(p)
    return out
''',
    "seeding.py": '''\
"""Global seeding (stand-in of torch.manual_seed)."""

import random


def manual_seed(seed):
    random.seed(seed)
    return seed
''',
    "data.py": '''\
"""Shuffled batches of sample indices (stand-in of a DataLoader with a sampler)."""

import random


def batches(n, batch_size, seed):
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
''',
}


@dataclass(frozen=True)
class Edit:
    """One edit of an installed framework file: ``old`` replaced by ``new`` in ``module``."""

    name: str
    module: str
    old: str
    new: str
    effect: str
    probe_key: str


EDITS: dict[str, Edit] = {
    "optimizer": Edit(
        "optimizer",
        "optim.py",
        "p = p - lr * m_hat",
        "p = p + lr * m_hat",
        "the update is applied with its sign flipped",
        "update",
    ),
    "seeding": Edit(
        "seeding",
        "seeding.py",
        "random.seed(seed)",
        "random.seed()",
        "the seed is ignored (runs stop being reproducible)",
        "seeded",
    ),
    "data-loader": Edit(
        "data-loader",
        "data.py",
        "range(0, n, batch_size)",
        "range(0, n - batch_size, batch_size)",
        "the last batch of every epoch is silently dropped",
        "batches",
    ),
}

_PROBE = f"""\
import json, random
from {PACKAGE} import data, optim, seeding
upd = optim.adamw_update([1.0, -2.0], [0.5, -0.25], [0.0, 0.0], [0.0, 0.0], 1)
seeding.manual_seed(0)
print(json.dumps({{"update": upd, "seeded": random.random(), "batches": data.batches(10, 3, 0)}}))
"""


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _site_packages(env: Path) -> Path:
    return (
        env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )


def make_env(dest: Path) -> Path:
    """Create the throwaway environment at ``dest`` with the stand-in framework installed as a
    wheel would install it; return its interpreter."""
    subprocess.run(  # noqa: S603 - our own interpreter, a fixed module
        [sys.executable, "-m", "venv", "--without-pip", str(dest)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    site = _site_packages(dest)
    pkg = site / PACKAGE
    pkg.mkdir()
    info = site / f"{PACKAGE}-{_VERSION}.dist-info"
    info.mkdir()
    files: dict[str, bytes] = {}
    for name, text in _SOURCES.items():
        files[f"{PACKAGE}/{name}"] = text.encode()
    files[f"{info.name}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {_VERSION}\n".encode()
    )
    files[f"{info.name}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: trainwarden-drill\n"
    files[f"{info.name}/INSTALLER"] = b"pip\n"
    rows = []
    for rel, data in files.items():
        (site / rel).write_bytes(data)
        rows.append(f"{rel},{_record_hash(data)},{len(data)}")
    rows.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return dest / "bin" / "python"


def job_environ() -> dict[str, str]:
    """The environment the job runs with: this one without Python's path variables."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }


def apply_edit(env: Path, edit: Edit, *, rewrite_record: bool = False) -> Path:
    """Make ``edit`` in the environment's installed file (what the saboteur does); return it.
    ``rewrite_record``: also rewrite the file's ``RECORD`` row with the new hash and size, as a
    saboteur who read the RECORD check would."""
    site = _site_packages(env)
    path = site / PACKAGE / edit.module
    text = path.read_text()
    if edit.old not in text:
        raise ValueError(f"{path} does not contain {edit.old!r}")
    data = text.replace(edit.old, edit.new, 1).encode()
    path.write_bytes(data)
    if rewrite_record:
        record = site / f"{PACKAGE}-{_VERSION}.dist-info" / "RECORD"
        rel = f"{PACKAGE}/{edit.module}"
        rows = [
            f"{rel},{_record_hash(data)},{len(data)}" if row.startswith(rel + ",") else row
            for row in record.read_text().splitlines()
        ]
        record.write_text("\n".join(rows) + "\n")
    return path


def probe(python: Path) -> dict[str, object]:
    """What the installed framework does, run by the environment's own interpreter.

    ``-B``: the probe writes no bytecode. Otherwise an edit made within the same second as the
    file was written, keeping its size (flipping a sign does), would leave the first probe's
    bytecode looking current to Python, and the second probe would run the old code.
    """
    proc = subprocess.run(  # noqa: S603 - the drill's own throwaway interpreter and script
        [str(python), "-I", "-B", "-c", _PROBE],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env=job_environ(),
    )
    got: dict[str, object] = json.loads(proc.stdout)
    return got
