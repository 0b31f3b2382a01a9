"""Helpers that build a small wheel and install it into a real virtual environment."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEMO_FILES = {
    "twdemo/__init__.py": '"""Demo package installed by the attestation tests."""\n\nVALUE = 1\n',
    "twdemo/core.py": "def step(x):\n    return x + 1\n",
    "twdemo/data.txt": "plain data\n",
}


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    directory: Path,
    name: str = "twdemo",
    version: str = "1.0",
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``{name}-{version}-py3-none-any.whl`` with METADATA, WHEEL and a hashed RECORD;
    ``extra`` adds files (path in the wheel -> text)."""
    files = {p.replace("twdemo", name): c.encode() for p, c in DEMO_FILES.items()}
    files.update({p: c.encode() for p, c in (extra or {}).items()})
    info = f"{name}-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: trainwarden-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in files.items())
    record += f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for p, d in files.items():
            zf.writestr(p, d)
    return wheel


def pip_install(python: Path, wheel: Path) -> None:
    """Install ``wheel`` into the venv of ``python`` with the running interpreter's pip."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "--disable-pip-version-check",
            "--no-input",
            "install",
            "--no-index",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


@dataclass(frozen=True)
class Venv:
    """A test venv: its root, interpreter and site-packages."""

    root: Path
    python: Path
    site: Path

    def installed(self, rel: str) -> Path:
        """Path of an installed file, relative to site-packages."""
        return self.site / rel
