"""An RPM database of our own: a package built with ``rpmbuild`` from files already on disk and
recorded with ``rpm --justdb`` (nothing is installed, only the database written), the way a
Fedora/RHEL system's database lists its standard library."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{argv[0]} failed: {proc.stderr[-1500:]}"


def make_rpm_db(
    tmp: Path, files: Sequence[Path], name: str = "twstdlib", digest_algo: int = 8
) -> Path:
    """Build package ``name`` listing ``files`` (with their current digests, by rpm's algorithm
    number ``digest_algo``: 8 is sha256, 10 sha512, 1 md5) and record it in a new database under
    ``tmp``; returns the database directory."""
    top, db, spec = tmp / "rpmbuild", tmp / "rpmdb", tmp / f"{name}.spec"
    install = "\n".join(
        f"mkdir -p '%{{buildroot}}{f.parent}'\ncp -p '{f}' '%{{buildroot}}{f}'" for f in files
    )
    listed = "\n".join(f'"{f}"' for f in files)
    spec.write_text(
        f"Name: {name}\nVersion: 1\nRelease: 1\nSummary: test\nLicense: none\n"
        f"BuildArch: noarch\n%description\ntest\n%install\n{install}\n%files\n{listed}\n"
    )
    defines = {
        "_topdir": str(top),
        "_dbpath": str(db),
        "__os_install_post": "%{nil}",
        "debug_package": "%{nil}",
        "_build_id_links": "none",
        "_binaries_in_noarch_packages_terminate_build": "0",
        "_binary_filedigest_algorithm": str(digest_algo),
    }
    flags = [x for k, v in defines.items() for x in ("--define", f"{k} {v}")]
    _run(["rpmbuild", "-bb", "--quiet", *flags, str(spec)])
    package = next(top.rglob(f"{name}-*.rpm"))
    db.mkdir(exist_ok=True)
    _run(["rpm", "--dbpath", str(db), "--initdb"])
    _run(
        [
            "rpm",
            "--dbpath",
            str(db),
            "-i",
            "--justdb",
            "--nodeps",
            "--noscripts",
            "--ignorearch",
            "--ignoreos",
            str(package),
        ]
    )
    return db
