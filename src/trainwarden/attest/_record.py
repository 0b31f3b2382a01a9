"""Installed distributions and their RECORD files (the hashes the wheel shipped with).

RECORD is the CSV that every wheel installer writes into ``*.dist-info`` (PEP 376 / 627): one row
per installed file with ``algorithm=urlsafe-b64-digest`` and the size. ``*.egg-info`` installs are
listed too, with ``installed-files.txt`` entries that carry no hash.
"""

from __future__ import annotations

import binascii
import csv
import enum
import io
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from trainwarden._internal.files import open_regular
from trainwarden.attest._cache import HashCache, RecordRow

__all__ = [
    "ACCEPTED_ALGORITHMS",
    "DistInfo",
    "FileStatus",
    "RecordEntry",
    "find_distributions",
    "parse_record",
]

# PEP 376 forbids md5 and sha1 in RECORD; anything weaker than sha256 is not accepted as proof.
ACCEPTED_ALGORITHMS = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_512", "blake2b"})


class FileStatus(str, enum.Enum):
    """Verification status of one file a distribution installed."""

    OK = "ok"
    MODIFIED = "modified"
    MISSING = "missing"
    NO_HASH = "no-hash"


class RecordEntry(NamedTuple):
    """One RECORD row: ``path`` relative to the site directory, digest as ``(algorithm, bytes)``.

    A NamedTuple (immutable) because a torch environment has ~50k rows to build on every verify.
    """

    path: str
    algorithm: str | None
    digest: bytes | None
    size: int | None


@dataclass(frozen=True)
class DistInfo:
    """A distribution found on disk: metadata plus its RECORD rows (empty when unreadable).

    ``record_problem`` is empty when RECORD parsed, else what is wrong with it.
    """

    name: str
    version: str
    metadata_dir: str
    location: str
    installer: str | None
    direct_url: Mapping[str, Any] | None
    # RecordEntry rows, or plain tuples of the same shape when they come from the RECORD cache.
    entries: tuple[RecordRow, ...] = field(repr=False)
    record_problem: str = ""
    kind: str = "dist-info"


_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PAD = ("", "===", "==", "=")


def _b64decode(text: str) -> bytes:
    # binascii and a bytes table directly: base64.urlsafe_b64decode's Python wrapper and
    # str.translate cost more than the decode itself, ~50k times per torch environment.
    return binascii.a2b_base64((text + _PAD[len(text) % 4]).encode("ascii").translate(_URLSAFE))


_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128, "sha3_256": 64, "sha3_512": 128}
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _decode_digest(algorithm: str, value: str) -> bytes:
    # PEP 376 says urlsafe base64, but some distribution builds (Debian's) write hex digests.
    # The lengths differ (43 vs 64 characters for sha256), so the two cannot be confused.
    if len(value) == _HEX_LENGTHS.get(algorithm, -1) and set(value) <= _HEXDIGITS:
        return bytes.fromhex(value)
    return _b64decode(value)


def parse_record(text: str, source: str) -> tuple[list[RecordEntry], list[str]]:
    """Parse RECORD text; return entries and one message per malformed row (naming ``source``)."""
    entries: list[RecordEntry] = []
    problems: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        # csv only for quoted rows (paths with commas or quotes); a plain split is 10x faster.
        row = next(csv.reader(io.StringIO(line))) if '"' in line else line.rsplit(",", 2)
        if not row:
            continue
        path = row[0]
        hash_field = row[1] if len(row) > 1 else ""
        size_field = row[2] if len(row) > 2 else ""
        algorithm: str | None = None
        digest: bytes | None = None
        if hash_field:
            alg, sep, value = hash_field.partition("=")
            try:
                if not sep:
                    raise ValueError("no '='")
                algorithm = alg.lower()
                digest = _decode_digest(algorithm, value)
            except (ValueError, TypeError, UnicodeEncodeError, binascii.Error) as e:
                problems.append(f"{source}:{lineno}: bad hash field {hash_field!r} ({e})")
        size: int | None = None
        if size_field:
            try:
                size = int(size_field)
            except ValueError:
                problems.append(f"{source}:{lineno}: bad size field {size_field!r}")
        entries.append(RecordEntry(path, algorithm, digest, size))
    return entries, problems


def _read_text(path: str) -> str | None:
    # A FIFO or device in a metadata directory is not read (opening a FIFO would wait forever).
    try:
        fd = open_regular(path)
    except OSError:
        return None
    with open(fd, encoding="utf-8", errors="surrogateescape") as f:
        try:
            return f.read()
        except OSError:
            return None


def _metadata_headers(text: str) -> dict[str, str]:
    # Only the header block matters; email.parser would also parse the (large) description.
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and not key.startswith((" ", "\t")):
            out.setdefault(key.strip().lower(), value.strip())
    return out


def _read_record(record_path: str, cache: HashCache | None) -> tuple[tuple[RecordRow, ...], str]:
    # Parsing ~50k RECORD rows is the largest cost of a warm verify; the parse is cached under
    # the metadata of the descriptor actually read, so an edited RECORD is always parsed again.
    try:
        fd = os.open(
            record_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError:
        return (), f"{record_path} is missing or unreadable"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return (), f"{record_path} is not a regular file"
        hit = cache.record_get(record_path, st) if cache is not None else None
        if hit is not None:
            return hit
        try:
            text = f.read().decode("utf-8", errors="surrogateescape")
        except OSError:
            return (), f"{record_path} is missing or unreadable"
    entries, problems = parse_record(text, record_path)
    rows: tuple[RecordRow, ...] = tuple(tuple(e) for e in entries)  # type: ignore[misc]
    result = rows, "; ".join(problems[:5])
    if cache is not None:
        cache.record_put(record_path, st, result)
    return result


def _dist_from_dir(location: str, dirname: str, cache: HashCache | None = None) -> DistInfo:
    meta_dir = os.path.join(location, dirname)
    is_egg = dirname.endswith(".egg-info")
    stem = dirname.rsplit(".", 1)[0]
    meta_text = _read_text(os.path.join(meta_dir, "PKG-INFO" if is_egg else "METADATA")) or ""
    headers = _metadata_headers(meta_text)
    fallback_name, _, fallback_version = stem.partition("-")
    name = headers.get("name") or fallback_name
    version = headers.get("version") or fallback_version.split("-")[0] or "?"
    installer = (_read_text(os.path.join(meta_dir, "INSTALLER")) or "").strip() or None
    direct_url: Mapping[str, Any] | None = None
    raw = _read_text(os.path.join(meta_dir, "direct_url.json"))
    if raw is not None:
        try:
            parsed = json.loads(raw)
            direct_url = parsed if isinstance(parsed, dict) else None
        except json.JSONDecodeError:
            direct_url = {"error": "direct_url.json is not valid JSON"}
    problem = ""
    entries: tuple[RecordRow, ...] = ()
    if is_egg:
        listing = _read_text(os.path.join(meta_dir, "installed-files.txt"))
        if listing is None:
            problem = "egg-info without installed-files.txt: files cannot be listed"
        else:
            entries = tuple(
                RecordEntry(
                    os.path.relpath(os.path.join(meta_dir, line.strip()), location),
                    None,
                    None,
                    None,
                )
                for line in listing.splitlines()
                if line.strip()
            )
    else:
        entries, problem = _read_record(os.path.join(meta_dir, "RECORD"), cache)
    return DistInfo(
        name=name,
        version=version,
        metadata_dir=meta_dir,
        location=location,
        installer=installer,
        direct_url=direct_url,
        entries=entries,
        record_problem=problem,
        kind="egg-info" if is_egg else "dist-info",
    )


def find_distributions(site_dirs: list[str], cache: HashCache | None = None) -> Iterator[DistInfo]:
    """Every ``*.dist-info`` / ``*.egg-info`` directory directly inside ``site_dirs``; parsed
    RECORDs are taken from and added to ``cache`` when given."""
    for location in site_dirs:
        try:
            names = sorted(e.name for e in os.scandir(location) if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                yield _dist_from_dir(location, name, cache)
