"""The decisions that compare installed files with what vouches for them, called directly.

``_file_state`` (each RECORD row against the file on disk, through the hash cache), ``_vouch``
(files outside site-packages against conda, dpkg and RPM records), ``check_snapshot``'s RECORD
findings and the baseline comparison (``diff_snapshots`` and its findings) are given small real
directory trees, dist-info RECORDs, package databases and snapshots built in a temporary folder:
no interpreter is started, so each case runs in milliseconds. Each tampering is pinned exactly:
the status and digests a row gets, and the finding's rule, severity, message, location and
evidence.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from trainwarden.attest import _ospkg as ospkg
from trainwarden.attest import _syspath as syspath
from trainwarden.attest._cache import HashCache, PycHead, cache_key_packer
from trainwarden.attest._codedir import CodeDir
from trainwarden.attest._diff import diff_snapshots
from trainwarden.attest._effects import EnvEffect
from trainwarden.attest._envvars import describe
from trainwarden.attest._pth import PthContent, read_pth
from trainwarden.attest._record import FileStatus
from trainwarden.attest._snapshot import (
    CustomizeModule,
    DistFile,
    Distribution,
    Interpreter,
    Orphan,
    PthFile,
    Snapshot,
    _file_state,
    _FileState,
    _vouch,
    _walk,
)
from trainwarden.attest._syspath import PathFile
from trainwarden.attest._verify import check_snapshot
from trainwarden.findings import Finding, Severity

from .rpmdb import make_rpm_db

OK, MODIFIED, MISSING, NO_HASH = (
    FileStatus.OK,
    FileStatus.MODIFIED,
    FileStatus.MISSING,
    FileStatus.NO_HASH,
)
TAG = "cpython-311"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _field(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}={_b64(hashlib.new(alg, data).digest())}"


def _key(path: Path | str) -> bytes:
    st = os.lstat(path)
    return cache_key_packer()(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Env:
    """A prefix with a site directory, an interpreter file outside it, and one distribution."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "lib" / "python3.11" / "site-packages"
        self.site.mkdir(parents=True)
        self.python = root / "bin" / "python3.11"
        self.python.parent.mkdir()
        self.python.write_bytes(b"\x7fELF not really an interpreter\n")

    def install(
        self,
        name: str,
        files: Mapping[str, bytes],
        *,
        fields: Mapping[str, str] | None = None,
        unlisted: Sequence[str] = (),
    ) -> Path:
        """Write ``files`` and a dist-info whose RECORD lists each with its sha256 (or the hash
        field ``fields`` gives; rows in ``unlisted`` are only listed, never written)."""
        for rel, data in files.items():
            if rel in unlisted:
                continue
            p = self.site / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        info = self.site / f"{name}-1.0.dist-info"
        info.mkdir(exist_ok=True)
        meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode()
        (info / "METADATA").write_bytes(meta)
        rows = [f"{info.name}/METADATA,{_field(meta)},{len(meta)}"]
        for rel, data in files.items():
            rows.append(f"{rel},{(fields or {}).get(rel, _field(data))},{len(data)}")
        rows.append(f"{info.name}/RECORD,,")
        (info / "RECORD").write_text("\n".join(rows) + "\n")
        return info

    def state(
        self,
        cache: HashCache | None = None,
        *,
        pths: Sequence[PthContent] = (),
        customize: Sequence[tuple[str, str, str, bool]] = (),
        customize_real: Mapping[str, str] | None = None,
        path_stats: Mapping[str, os.stat_result] | None = None,
        tag: str = TAG,
        site_dirs: Sequence[str] = (),
        stats: dict[str, os.stat_result] | None = None,
        pyc_heads: dict[str, PycHead] | None = None,
    ) -> tuple[_FileState, dict[str, bytes], bool]:
        if stats is None:
            stats = self.walk()
        return _file_state(
            [str(self.site), *site_dirs],
            stats,
            path_stats or {},
            {"cache_tag": tag},
            pths,
            customize,
            customize_real or {},
            str(self.python),
            cache if cache is not None else HashCache(None),
            1,
            pyc_heads,
        )

    def walk(self) -> dict[str, os.stat_result]:
        stats: dict[str, os.stat_result] = {}
        _walk(str(self.site), stats, set())
        return stats

    def rows(
        self, state: _FileState, name: str = "pkg"
    ) -> list[tuple[str, FileStatus, str | None, str | None]]:
        (d,) = [d for d in state.distributions if d.name == name]
        return [(f.path, f.status, f.sha256, f.expected) for f in d.files]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path / "prefix")


PKG = {"pkg/__init__.py": b"from .mod import Y\n", "pkg/mod.py": b"Y = 2\n"}


def _meta_rows(env: Env, name: str = "pkg") -> list[tuple[str, FileStatus, str | None, str | None]]:
    info = env.site / f"{name}-1.0.dist-info"
    return [
        (f"{info.name}/METADATA", OK, _sha((info / "METADATA").read_bytes()), None),
        (f"{info.name}/RECORD", NO_HASH, _sha((info / "RECORD").read_bytes()), None),
    ]


# -- RECORD against the files on disk (_file_state) ---------------------------------------------


def test_a_clean_distribution_is_ok_row_by_row_cold_and_warm(env: Env) -> None:
    env.install("pkg", PKG)
    cache = HashCache(None)
    expected = [
        *_meta_rows(env),
        ("pkg/__init__.py", OK, _sha(PKG["pkg/__init__.py"]), None),
        ("pkg/mod.py", OK, _sha(PKG["pkg/mod.py"]), None),
    ]
    for run in range(3):
        state, outside, consistent = env.state(cache)
        assert env.rows(state) == expected, run
        (d,) = state.distributions
        assert (d.name, d.version, d.kind, d.record_problem) == ("pkg", "1.0", "dist-info", "")
        assert (d.location, d.metadata_dir) == (str(env.site), str(env.site / "pkg-1.0.dist-info"))
        assert state.orphans == ()
        assert state.unreadable == {}
        assert consistent
        # the interpreter is read outside the walk: its metadata key is kept for the memo
        assert outside == {str(env.python): _key(env.python)}
        assert state.interp_digest == hashlib.sha256(env.python.read_bytes()).digest()
    # cold: 5 files read; each warm run: the 4 RECORD rows and the interpreter are cache hits
    assert (cache.misses, cache.hits) == (5, 10)
    # and RECORD itself was parsed once, under the metadata of the file read
    record = env.site / "pkg-1.0.dist-info" / "RECORD"
    assert cache.record_get(str(record), os.stat(record)) is not None


@pytest.mark.parametrize("how", ["in place", "replaced by a new file"])
def test_a_same_size_edit_with_its_mtime_restored_is_modified_on_a_warm_cache(
    env: Env, how: str
) -> None:
    env.install("pkg", PKG)
    cache = HashCache(None)
    env.state(cache)  # every digest is now cached under the files' metadata
    mod = env.site / "pkg" / "mod.py"
    before = os.lstat(mod)
    if how == "in place":
        mod.write_bytes(b"Y = 3\n")
    else:
        new = mod.with_name("mod.py.new")
        new.write_bytes(b"Y = 3\n")
        os.replace(new, mod)
    os.utime(mod, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(mod)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    state, _, consistent = env.state(cache)
    assert env.rows(state)[-1] == (
        "pkg/mod.py",
        MODIFIED,
        _sha(b"Y = 3\n"),
        "sha256:" + _sha(PKG["pkg/mod.py"]),
    )
    assert env.rows(state)[-2][1] is OK
    assert consistent


def test_a_tampered_file_stays_modified_once_its_digest_is_cached(env: Env) -> None:
    env.install("pkg", PKG)
    (env.site / "pkg" / "mod.py").write_bytes(b"import os\n")
    cache = HashCache(None)
    for run in range(2):
        state, _, _ = env.state(cache)
        assert env.rows(state)[-1] == (
            "pkg/mod.py",
            MODIFIED,
            _sha(b"import os\n"),
            "sha256:" + _sha(PKG["pkg/mod.py"]),
        ), run


def test_a_cache_writable_by_others_is_not_read(env: Env, tmp_path: Path) -> None:
    env.install("pkg", PKG)
    mod = env.site / "pkg" / "mod.py"
    mod.write_bytes(b"import os\n")
    # a cache poisoned with RECORD's digest under the tampered file's metadata
    path = tmp_path / "cache" / "attest-sha256.bin"
    poison = HashCache(path)
    st = os.lstat(mod)
    poison.put(st, hashlib.sha256(PKG["pkg/mod.py"]).digest())
    poison.save()
    path.chmod(0o666)
    cache = HashCache(path)
    assert not cache.trusted
    assert cache.reason == f"{path} is writable by group or others; the hash cache is ignored"
    state, _, _ = env.state(cache)
    assert env.rows(state)[-1] == (
        "pkg/mod.py",
        MODIFIED,
        _sha(b"import os\n"),
        "sha256:" + _sha(PKG["pkg/mod.py"]),
    )


def test_a_missing_file_is_missing_with_records_digest(env: Env) -> None:
    absolute = str(env.root / "bin" / "pkg-abs")
    files = {
        **PKG,
        "../../../bin/pkg-tool": b"#!/bin/sh\n",
        "../../../bin/pkg-gone": b"x\n",
        absolute: b"abs\n",
    }
    env.install("pkg", files, unlisted=["../../../bin/pkg-gone"])
    (env.site / "pkg" / "mod.py").unlink()
    tool = env.root / "bin" / "pkg-tool"
    gone = env.root / "bin" / "pkg-gone"
    stats = env.walk()
    state, outside, _ = env.state(stats=stats)
    assert env.rows(state) == [
        ("../../../bin/pkg-gone", MISSING, None, "sha256:" + _sha(b"x\n")),
        ("../../../bin/pkg-tool", OK, _sha(b"#!/bin/sh\n"), None),
        (absolute, OK, _sha(b"abs\n"), None),
        *_meta_rows(env),
        ("pkg/__init__.py", OK, _sha(PKG["pkg/__init__.py"]), None),
        ("pkg/mod.py", MISSING, None, "sha256:" + _sha(PKG["pkg/mod.py"])),
    ]
    # files outside the walk: read with their metadata, or noted as absent
    # files outside the walk are read with their metadata; an absent one is remembered as such
    assert outside == {
        str(gone): b"",
        str(tool): _key(tool),
        str(env.site / "pkg" / "mod.py"): b"",
        absolute: _key(absolute),
        str(env.python): _key(env.python),
    }
    # the caller's walk now holds what was found outside it (the snapshot checks its bytecode)
    assert stats[str(tool)] == os.lstat(tool)
    assert stats[absolute] == os.lstat(absolute)


def test_a_missing_row_without_a_hash_has_no_expected_digest(env: Env) -> None:
    env.install("pkg", PKG, fields={"pkg/mod.py": ""})
    (env.site / "pkg" / "mod.py").unlink()
    state, _, _ = env.state()
    assert env.rows(state)[-1] == ("pkg/mod.py", MISSING, None, None)


def test_a_hash_field_that_does_not_decode_gives_no_expected_digest(env: Env) -> None:
    files = {"pkg/bad.py": b"B = 1\n", "pkg/bad_gone.py": b"G = 1\n"}
    # one base64 character too many: binascii refuses it
    fields = dict.fromkeys(files, "sha256=A")
    info = env.install("pkg", files, fields=fields, unlisted=["pkg/bad_gone.py"])
    cache = HashCache(None)
    for run in range(2):
        state, _, _ = env.state(cache)
        assert env.rows(state)[-2:] == [
            ("pkg/bad.py", NO_HASH, _sha(b"B = 1\n"), None),
            ("pkg/bad_gone.py", MISSING, None, None),
        ], run
        (d,) = state.distributions
        assert d.record_problem.startswith(f"{info / 'RECORD'}:2: bad hash field 'sha256=A' (")


def test_added_files_are_orphans_with_their_digest(env: Env, tmp_path: Path) -> None:
    env.install("pkg", PKG)
    (env.site / "pkg" / "evil.py").write_bytes(b"import os\n")
    (env.site / "loose.txt").write_bytes(b"hello\n")
    outside = tmp_path / "elsewhere.py"
    outside.write_bytes(b"Z = 1\n")
    (env.site / "pkg" / "link.py").symlink_to(outside)
    state, _, _ = env.state()
    link_size = os.lstat(env.site / "pkg" / "link.py").st_size
    assert state.orphans == (
        Orphan(str(env.site / "loose.txt"), _sha(b"hello\n"), 6),
        Orphan(str(env.site / "pkg" / "evil.py"), _sha(b"import os\n"), 10),
        Orphan(str(env.site / "pkg" / "link.py"), None, link_size),
    )
    assert [r[1] for r in env.rows(state)] == [OK, NO_HASH, OK, OK]


def test_record_hashes_of_other_algorithms_and_malformed_ones(env: Env) -> None:
    files = {
        "pkg/a.py": b"A = 1\n",
        "pkg/b.py": b"B = 1\n",
        "pkg/c.py": b"C = 1\n",
        "pkg/d.py": b"D = 1\n",
        "pkg/e.py": b"E = 1\n",
        "pkg/f.py": b"F = 1\n",
        "pkg/g.py": b"G = 1\n",
    }
    fields = {
        "pkg/a.py": _field(files["pkg/a.py"], "sha512"),
        # the digest of other bytes
        "pkg/b.py": _field(b"B = 2\n", "sha384"),
        # md5 is not accepted as proof, even when it matches
        "pkg/c.py": _field(files["pkg/c.py"], "md5"),
        "pkg/d.py": "sha256=!!",
        # Debian's hex spelling
        "pkg/e.py": "sha256=" + _sha(files["pkg/e.py"]),
        "pkg/f.py": "sha256",
        "pkg/g.py": _field(b"G = 2\n", "sha512"),
    }
    info = env.install("pkg", files, fields=fields)
    sha512 = hashlib.sha512(files["pkg/a.py"]).hexdigest()
    cache = HashCache(None)
    for run in range(2):  # cold, then with every sha256 cached
        state, _, _ = env.state(cache)
        assert env.rows(state) == [
            *_meta_rows(env),
            ("pkg/a.py", OK, _sha(files["pkg/a.py"]), f"sha512:{sha512}"),
            (
                "pkg/b.py",
                MODIFIED,
                _sha(files["pkg/b.py"]),
                "sha384:" + hashlib.sha384(b"B = 2\n").hexdigest(),
            ),
            (
                "pkg/c.py",
                NO_HASH,
                _sha(files["pkg/c.py"]),
                "md5:" + hashlib.md5(files["pkg/c.py"]).hexdigest(),  # noqa: S324 - RECORD's
            ),
            # not base64: decodes to no digest at all, which no file matches
            ("pkg/d.py", MODIFIED, _sha(files["pkg/d.py"]), "sha256:"),
            ("pkg/e.py", OK, _sha(files["pkg/e.py"]), None),
            ("pkg/f.py", NO_HASH, _sha(files["pkg/f.py"]), None),
            (
                "pkg/g.py",
                MODIFIED,
                _sha(files["pkg/g.py"]),
                "sha512:" + hashlib.sha512(b"G = 2\n").hexdigest(),
            ),
        ], run
        (d,) = state.distributions
        record = info / "RECORD"
        assert d.record_problem == f"{record}:7: bad hash field 'sha256' (no '=')"


def test_a_symlink_swapped_in_for_a_recorded_file_is_never_ok(env: Env, tmp_path: Path) -> None:
    files = {**PKG, "pkg/other.py": b"O = 1\n", "pkg/plain.txt": b"text\n"}
    env.install(
        "pkg",
        files,
        fields={
            "pkg/other.py": _field(files["pkg/other.py"], "sha512"),
            "pkg/plain.txt": "",
        },
    )
    cache = HashCache(None)
    env.state(cache)
    # each replaced by a link to a file with exactly the content RECORD lists
    for rel in ("pkg/mod.py", "pkg/other.py", "pkg/plain.txt"):
        copy = tmp_path / rel.replace("/", "_")
        copy.write_bytes(files[rel])
        (env.site / rel).unlink()
        (env.site / rel).symlink_to(copy)
    state, _, _ = env.state(cache)
    rows = {r[0]: r for r in env.rows(state)}
    assert rows["pkg/mod.py"] == ("pkg/mod.py", MODIFIED, None, "sha256:" + _sha(PKG["pkg/mod.py"]))
    assert rows["pkg/other.py"] == (
        "pkg/other.py",
        MODIFIED,
        None,
        "sha512:" + hashlib.sha512(files["pkg/other.py"]).hexdigest(),
    )
    assert rows["pkg/plain.txt"] == ("pkg/plain.txt", NO_HASH, None, None)
    assert rows["pkg/__init__.py"][1] is OK


def test_record_paths_that_leave_the_site_directory_are_normalised(env: Env) -> None:
    files = {
        "./pkg/a.py": b"A = 1\n",
        "pkg/sub/../b.py": b"B = 1\n",
        "pkg//c.py": b"C = 1\n",
        "pkg/./d.py": b"D = 1\n",
    }
    (env.site / "pkg" / "sub").mkdir(parents=True)
    env.install("pkg", files)
    (env.site / "pkg" / "c.py").write_bytes(b"C = 2\n")
    state, outside, _ = env.state()
    assert env.rows(state) == [
        ("./pkg/a.py", OK, _sha(b"A = 1\n"), None),
        *_meta_rows(env),
        ("pkg/./d.py", OK, _sha(b"D = 1\n"), None),
        ("pkg//c.py", MODIFIED, _sha(b"C = 2\n"), "sha256:" + _sha(b"C = 1\n")),
        ("pkg/sub/../b.py", OK, _sha(b"B = 1\n"), None),
    ]
    # each row names the walked file: none is left over as an orphan, none is read twice
    assert state.orphans == ()
    assert outside == {str(env.python): _key(env.python)}


def test_a_record_row_naming_a_directory_is_modified_and_unreadable(env: Env) -> None:
    (env.site / "pkg" / "sub").mkdir(parents=True)
    env.install("pkg", {**PKG, "pkg/sub/": b""}, unlisted=["pkg/sub/"])
    state, _, consistent = env.state()
    assert ("pkg/sub/", MODIFIED, None, "sha256:" + _sha(b"")) in env.rows(state)
    # what could not be read is reported, and does not make the other results unfit to keep
    assert consistent
    assert state.unreadable == {str(env.site / "pkg" / "sub") + "/": "not a regular file"}


def test_bytecode_belongs_to_its_source_only_in_pycache_with_the_interpreters_tag(
    env: Env,
) -> None:
    env.install("pkg", PKG)
    cache_dir = env.site / "pkg" / "__pycache__"
    cache_dir.mkdir()
    owned = cache_dir / f"mod.{TAG}.pyc"
    owned.write_bytes(b"owned bytecode")
    other_tag = cache_dir / "mod.cpython-312.pyc"
    other_tag.write_bytes(b"other tag")
    no_source = cache_dir / f"evil.{TAG}.pyc"
    no_source.write_bytes(b"no source")
    (env.site / "pkg" / "notcache").mkdir()
    not_in_cache = env.site / "pkg" / "notcache" / f"mod.{TAG}.pyc"
    not_in_cache.write_bytes(b"not in __pycache__")
    # bytecode outside __pycache__ seen first must not stop the search for the rest
    walked = env.walk()
    stats = {str(not_in_cache): walked.pop(str(not_in_cache)), **walked}
    heads: dict[str, PycHead] = {}
    state, _, _ = env.state(stats=stats, pyc_heads=heads)
    # what the hash pass read of each bytecode file is handed to the bytecode check
    data = owned.read_bytes()
    assert heads[str(owned)] == (data[:16], hashlib.sha256(data[16:]).digest(), _key(owned))
    assert sorted(heads) == sorted(str(p) for p in (owned, other_tag, no_source, not_in_cache))
    assert env.rows(state) == [
        *_meta_rows(env),
        ("pkg/__init__.py", OK, _sha(PKG["pkg/__init__.py"]), None),
        (f"pkg/__pycache__/mod.{TAG}.pyc", NO_HASH, _sha(b"owned bytecode"), None),
        ("pkg/mod.py", OK, _sha(PKG["pkg/mod.py"]), None),
    ]
    assert [o.path for o in state.orphans] == [
        str(no_source),
        str(other_tag),
        str(not_in_cache),
    ]
    # without a cache tag, any bytecode of an owned source in __pycache__ belongs to it
    untagged, _, _ = env.state(tag="")
    assert [r[0] for r in env.rows(untagged) if r[0].endswith(".pyc")] == [
        f"pkg/__pycache__/mod.{TAG}.pyc",
        "pkg/__pycache__/mod.cpython-312.pyc",
    ]
    assert [o.path for o in untagged.orphans] == [str(no_source), str(not_in_cache)]


def test_only_bytecode_is_claimed_for_its_source_and_a_listed_one_once(env: Env) -> None:
    listed = f"pkg/__pycache__/__init__.{TAG}.pyc"
    (env.site / "pkg" / "__pycache__").mkdir(parents=True)
    env.install("pkg", {**PKG, listed: b"listed bytecode"}, fields={listed: ""})
    # named like bytecode of an owned source, but a shared object: nobody installed it
    planted = env.site / "pkg" / "__pycache__" / f"mod.{TAG}.so"
    planted.write_bytes(b"\x7fELF")
    state, _, _ = env.state()
    assert [r for r in env.rows(state) if "__pycache__" in r[0]] == [
        (listed, NO_HASH, _sha(b"listed bytecode"), None)
    ]
    assert state.orphans == (Orphan(str(planted), _sha(b"\x7fELF"), 4),)


def test_owned_bytecode_that_is_a_symlink_has_no_digest(env: Env, tmp_path: Path) -> None:
    env.install("pkg", PKG)
    cache_dir = env.site / "pkg" / "__pycache__"
    cache_dir.mkdir()
    target = tmp_path / "x.pyc"
    target.write_bytes(b"bytecode")
    (cache_dir / f"mod.{TAG}.pyc").symlink_to(target)
    state, _, _ = env.state()
    assert (f"pkg/__pycache__/mod.{TAG}.pyc", NO_HASH, None, None) in env.rows(state)


def test_pth_files_get_their_owner_and_own_digest_cold_and_warm(env: Env, tmp_path: Path) -> None:
    owned = b"import pkg\n"
    env.install("pkg", {**PKG, "pkg.pth": owned})
    (env.site / "zz-evil.pth").write_bytes(b"import os; os.system('x')\n")
    target = tmp_path / "linked.pth"
    target.write_bytes(b"/tmp\n")
    (env.site / "zz-link.pth").symlink_to(target)
    pths = [read_pth(str(env.site / n)) for n in ("pkg.pth", "zz-evil.pth", "zz-link.pth")]
    # a .pth file the walk did not see (removed since it was read)
    pths.append(PthContent(str(env.site / "zz-gone.pth"), ("import gone",), ()))
    cache = HashCache(None)
    for run in range(2):
        state, _, _ = env.state(cache, pths=pths)
        assert state.pth_files == (
            PthFile(str(env.site / "pkg.pth"), "pkg", _sha(owned), ("import pkg",), ()),
            PthFile(
                str(env.site / "zz-evil.pth"),
                None,
                _sha(b"import os; os.system('x')\n"),
                ("import os; os.system('x')",),
                (),
            ),
            PthFile(str(env.site / "zz-link.pth"), None, None, (), ("/tmp",)),
            PthFile(str(env.site / "zz-gone.pth"), None, None, ("import gone",), ()),
        ), run
        assert ("pkg.pth", OK, _sha(owned), None) in env.rows(state)


def test_customize_modules_are_hashed_at_their_real_path(env: Env, tmp_path: Path) -> None:
    env.install("pkg", {**PKG, "sitecustomize.py": b"import pkg\n"})
    real = tmp_path / "real_usercustomize.py"
    real.write_bytes(b"import os\n")
    user = env.site / "usercustomize.py"
    user.symlink_to(real)
    gone = tmp_path / "gone" / "sitecustomize.py"
    site_mod = str(env.site / "sitecustomize.py")
    customize = [
        ("sitecustomize", site_mod, "site-packages", True),
        ("usercustomize", str(user), "site-packages", True),
        ("sitecustomize", str(gone), "pythonpath", False),
    ]
    # read in this order: one already hashed, one missing, then one still to read
    customize_real = {site_mod: site_mod, str(gone): str(gone), str(user): str(real)}
    state, outside, _ = env.state(customize=customize, customize_real=customize_real)
    assert state.customize == (
        CustomizeModule(
            "sitecustomize", site_mod, "pkg", _sha(b"import pkg\n"), "site-packages", True
        ),
        CustomizeModule(
            "usercustomize", str(user), None, _sha(b"import os\n"), "site-packages", True
        ),
        CustomizeModule("sitecustomize", str(gone), None, None, "pythonpath", False),
    )
    assert outside == {
        str(real): _key(real),
        str(gone): b"",
        str(env.python): _key(env.python),
    }


def test_files_on_the_path_outside_site_packages_are_hashed_except_links(
    env: Env, tmp_path: Path
) -> None:
    env.install("pkg", PKG)
    lib = tmp_path / "stdlib"
    lib.mkdir()
    (lib / "random.py").write_bytes(b"R = 1\n")
    (lib / "link.py").symlink_to(lib / "random.py")
    path_stats = {str(p): os.lstat(p) for p in (lib / "random.py", lib / "link.py")}
    state, _, _ = env.state(path_stats=path_stats)
    assert state.path_digests == {str(lib / "random.py"): hashlib.sha256(b"R = 1\n").digest()}


def test_a_file_changed_between_the_walk_and_the_read_is_not_remembered(env: Env) -> None:
    env.install("pkg", PKG)
    stats = env.walk()
    (env.site / "pkg" / "mod.py").write_bytes(b"Y = 22\n")
    state, _, consistent = env.state(stats=stats)
    assert not consistent
    assert env.rows(state)[-1] == (
        "pkg/mod.py",
        MODIFIED,
        _sha(b"Y = 22\n"),
        "sha256:" + _sha(PKG["pkg/mod.py"]),
    )


def test_egg_info_files_have_no_hash_and_a_missing_listing_is_a_record_problem(
    env: Env,
) -> None:
    (env.site / "legacy").mkdir()
    (env.site / "legacy" / "__init__.py").write_bytes(b"L = 1\n")
    egg = env.site / "legacy-2.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: legacy\nVersion: 2.0\n\n")
    (egg / "installed-files.txt").write_text("../legacy/__init__.py\nPKG-INFO\n")
    bare = env.site / "bare-1.0.egg-info"
    bare.mkdir()
    (bare / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: bare\nVersion: 1.0\n\n")
    state, _, _ = env.state()
    assert env.rows(state, "legacy") == [
        ("legacy-2.0.egg-info/PKG-INFO", NO_HASH, _sha((egg / "PKG-INFO").read_bytes()), None),
        ("legacy/__init__.py", NO_HASH, _sha(b"L = 1\n"), None),
    ]
    (bare_dist,) = [d for d in state.distributions if d.name == "bare"]
    assert (bare_dist.kind, bare_dist.record_problem, bare_dist.files) == (
        "egg-info",
        "egg-info without installed-files.txt: files cannot be listed",
        (),
    )


def test_two_distributions_claiming_one_file_leave_it_to_the_first(env: Env) -> None:
    env.install("aaa", {"shared.py": b"S = 1\n"})
    (env.site / "bbb-1.0.dist-info").mkdir()
    meta = b"Metadata-Version: 2.1\nName: bbb\nVersion: 1.0\n\n"
    (env.site / "bbb-1.0.dist-info" / "METADATA").write_bytes(meta)
    (env.site / "bbb-1.0.dist-info" / "RECORD").write_text(
        f"shared.py,{_field(b'S = 1')},5\nbbb.pth,,\n"
    )
    (env.site / "bbb.pth").write_bytes(b"import shared\n")
    pths = [read_pth(str(env.site / "bbb.pth"))]
    state, _, _ = env.state(pths=pths)
    assert ("shared.py", OK, _sha(b"S = 1\n"), None) in env.rows(state, "aaa")
    assert ("shared.py", MODIFIED, _sha(b"S = 1\n"), "sha256:" + _sha(b"S = 1")) in env.rows(
        state, "bbb"
    )
    assert state.pth_files[0].owner == "bbb"


# -- files outside site-packages against their package manager (_vouch) -----------------------


def _hashed(paths: Sequence[Path]) -> tuple[dict[str, os.stat_result], dict[str, bytes]]:
    stats = {str(p): os.lstat(p) for p in paths}
    digests = {str(p): hashlib.sha256(p.read_bytes()).digest() for p in paths if not p.is_symlink()}
    return stats, digests


def test_conda_records_vouch_for_files_and_an_edit_is_modified(tmp_path: Path) -> None:
    prefix = tmp_path / "conda"
    lib = prefix / "lib" / "python3.11"
    lib.mkdir(parents=True)
    ok, edited, unknown = lib / "random.py", lib / "os.py", lib / "extra.py"
    for p in (ok, edited, unknown):
        p.write_bytes(p.name.encode())
    rows = [
        {"_path": "lib/python3.11/random.py", "sha256": _sha(b"random.py")},
        {"_path": "lib/python3.11/os.py", "sha256": _sha(b"os.py")},
    ]
    (prefix / "conda-meta").mkdir()
    doc = {"name": "python", "paths_data": {"paths_version": 1, "paths": rows}}
    (prefix / "conda-meta" / "python-3.11.0-0.json").write_text(json.dumps(doc))
    edited.write_bytes(b"import evil\n")
    link = lib / "link.py"
    link.symlink_to("random.py")
    stats, digests = _hashed([ok, edited, unknown, link])
    unreadable = lib / "locked.py"
    stats[str(unreadable)] = os.lstat(ok)
    out, problems = _vouch(
        stats, digests, {str(unreadable): "PermissionError: denied"}, [str(prefix)]
    )
    assert problems == {}
    assert out == (
        PathFile(str(unknown), _sha(b"extra.py"), 8, "unvouched", None, None),
        PathFile(str(link), None, 9, "symlink", None, "random.py"),
        PathFile(str(unreadable), None, 9, "unreadable", None, "PermissionError: denied"),
        PathFile(
            str(edited),
            _sha(b"import evil\n"),
            12,
            "modified",
            "conda:python",
            "sha256:" + _sha(b"os.py"),
        ),
        PathFile(str(ok), _sha(b"random.py"), 9, "ok", "conda:python", None),
    )


def _dpkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: Sequence[str]) -> None:
    info = tmp_path / "dpkg-info"
    info.mkdir()
    (info / "libpython3.11-stdlib:amd64.md5sums").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(syspath, "DPKG_INFO_DIR", str(info))
    monkeypatch.setattr(syspath, "DPKG_PREFIXES", (str(tmp_path) + "/",))


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - dpkg's format


def test_dpkg_md5sums_vouch_for_files_and_an_edit_is_modified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "usr" / "lib" / "python3.11"
    lib.mkdir(parents=True)
    ok, edited, both = lib / "random.py", lib / "os.py", lib / "both.py"
    for p in (ok, edited, both):
        p.write_bytes(p.name.encode())
    _dpkg(
        tmp_path,
        monkeypatch,
        [
            f"{_md5(b'random.py')}  {str(ok).lstrip('/')}",
            f"{_md5(b'os.py').upper()}  {str(edited).lstrip('/')}",
            # conda's record wins over dpkg's for the same file
            f"{_md5(b'other')}  {str(both).lstrip('/')}",
        ],
    )
    prefix = tmp_path / "usr"
    (prefix / "conda-meta").mkdir()
    rows = [{"_path": "lib/python3.11/both.py", "sha256": _sha(b"both.py")}]
    doc = {"name": "python", "paths_data": {"paths": rows}}
    (prefix / "conda-meta" / "python.json").write_text(json.dumps(doc))
    edited.write_bytes(b"import evil\n")
    stats, digests = _hashed([ok, edited, both])
    out, problems = _vouch(stats, digests, {}, [str(prefix)])
    assert problems == {}
    assert out == (
        PathFile(str(both), _sha(b"both.py"), 7, "ok", "conda:python", None),
        PathFile(
            str(edited),
            _sha(b"import evil\n"),
            12,
            "modified",
            "dpkg:libpython3.11-stdlib",
            "md5:" + _md5(b"os.py"),
        ),
        PathFile(str(ok), _sha(b"random.py"), 9, "ok", "dpkg:libpython3.11-stdlib", None),
    )


def test_a_file_dpkg_lists_but_that_cannot_be_read_again_is_modified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "usr" / "lib"
    lib.mkdir(parents=True)
    gone = lib / "gone.py"
    gone.write_bytes(b"G\n")
    line = _md5(b"G\n") + "  " + str(gone).lstrip("/")
    _dpkg(tmp_path, monkeypatch, [line])
    stats, digests = _hashed([gone])
    gone.unlink()  # removed between the hash pass and the md5 pass
    out, _ = _vouch(stats, digests, {}, [str(tmp_path / "usr")])
    assert out == (
        PathFile(
            str(gone),
            _sha(b"G\n"),
            2,
            "modified",
            "dpkg:libpython3.11-stdlib",
            "md5:" + _md5(b"G\n"),
        ),
    )


# -- check_snapshot's RECORD findings and the baseline comparison ------------------------------


def _interp(prefix: str = "/opt/py", base: str | None = None) -> Interpreter:
    return Interpreter(
        f"{prefix}/bin/python3.11",
        f"{prefix}/bin/python3.11",
        "3.11.9",
        "cpython",
        "aa" * 32,
        prefix,
        base or prefix,
        False,
        False,
        "",
        False,
    )


def _dist(files: Sequence[DistFile], **kw: object) -> Distribution:
    fields: dict[str, object] = {
        "name": "Demo_Pkg",
        "version": "1.0",
        "installer": "pip",
        "direct_url": None,
        "metadata_dir": "/opt/py/site/demo_pkg-1.0.dist-info",
        "location": "/opt/py/site",
        "kind": "dist-info",
        "record_problem": "",
        "files": tuple(files),
    }
    fields.update(kw)
    return Distribution(**fields)  # type: ignore[arg-type]


def _snap(dists: Sequence[Distribution], prefix: str = "/opt/py", **kw: object) -> Snapshot:
    fields: dict[str, object] = {
        "created": "2026-01-01T00:00:00+00:00",
        "host": "node1",
        "uid": 1000,
        "trainwarden_version": "0",
        "interpreter": _interp(prefix),
        "platform": {},
        "sys_path": (),
        "site_packages": (f"{prefix}/site",),
        "distributions": tuple(dists),
        "orphans": (),
        "pth_files": (),
        "customize": (),
        "environment": {},
        "code": (),
    }
    fields.update(kw)
    return Snapshot(**fields)  # type: ignore[arg-type]


A, B, C = "a" * 64, "b" * 64, "c" * 64


def _record_findings(snap: Snapshot) -> list[Finding]:
    return [f for f in check_snapshot(snap) if f.rule_id.startswith("TWA-REC-")]


def test_check_snapshot_reports_each_record_mismatch_exactly() -> None:
    files = [
        DistFile("demo/ok.py", OK, A, None),
        DistFile("demo/mod.py", MODIFIED, B, "sha256:" + A),
        DistFile("../../bin/demo", MISSING, None, "sha256:" + C),
        DistFile("demo/__pycache__/mod.pyc", NO_HASH, C, None),
        DistFile("demo/data.bin", NO_HASH, None, None),
    ]
    other = _dist([DistFile("o.py", NO_HASH, A, None)], name="other", metadata_dir="/opt/py/site/o")
    snap = _snap([_dist(files), other])
    assert _record_findings(snap) == [
        Finding(
            "TWA-REC-001",
            Severity.CRITICAL,
            "/opt/py/site/demo/mod.py of Demo_Pkg 1.0 differs from its RECORD hash",
            location="/opt/py/site/demo/mod.py",
            evidence={
                "distribution": "Demo_Pkg",
                "version": "1.0",
                "expected": "sha256:" + A,
                "actual_sha256": B,
            },
        ),
        Finding(
            "TWA-REC-002",
            Severity.HIGH,
            "/opt/bin/demo of Demo_Pkg 1.0 is listed in RECORD but missing",
            location="/opt/bin/demo",
            evidence={"distribution": "Demo_Pkg", "version": "1.0"},
        ),
        Finding(
            "TWA-REC-003",
            Severity.INFO,
            "3 installed file(s) have no RECORD hash (mostly bytecode compiled at install time, "
            "which is compared with its source); compare against a baseline to cover the rest",
            location="/opt/py",
            evidence={"per_distribution": {"Demo_Pkg": 2, "other": 1}},
        ),
    ]


def test_check_snapshot_reports_os_package_files_less_loudly_and_record_problems() -> None:
    files = [
        DistFile("demo/mod.py", MODIFIED, B, "sha256:" + A),
        DistFile("demo/gone.py", MISSING, None, None),
    ]
    dpkg = _dist(files, os_package="python3-demo", record_problem="RECORD is missing")
    wheel = _dist((), name="w", record_problem="bad row")
    os_note = " (OS package python3-demo: check with debsums)"
    assert _record_findings(_snap([dpkg, wheel], unreadable={"/opt/py/site/x.py": "EACCES"})) == [
        Finding(
            "TWA-REC-004",
            Severity.INFO,
            "Demo_Pkg 1.0: RECORD is missing",
            location="/opt/py/site/demo_pkg-1.0.dist-info",
            evidence={"distribution": "Demo_Pkg", "version": "1.0", "kind": "dist-info"},
        ),
        Finding(
            "TWA-REC-001",
            Severity.MEDIUM,
            f"/opt/py/site/demo/mod.py of Demo_Pkg 1.0 differs from its RECORD hash{os_note}",
            location="/opt/py/site/demo/mod.py",
            evidence={
                "distribution": "Demo_Pkg",
                "version": "1.0",
                "expected": "sha256:" + A,
                "actual_sha256": B,
            },
        ),
        Finding(
            "TWA-REC-002",
            Severity.LOW,
            f"/opt/py/site/demo/gone.py of Demo_Pkg 1.0 is listed in RECORD but missing{os_note}",
            location="/opt/py/site/demo/gone.py",
            evidence={"distribution": "Demo_Pkg", "version": "1.0"},
        ),
        Finding(
            "TWA-REC-004",
            Severity.MEDIUM,
            "w 1.0: bad row",
            location="/opt/py/site/demo_pkg-1.0.dist-info",
            evidence={"distribution": "w", "version": "1.0", "kind": "dist-info"},
        ),
        Finding(
            "TWA-REC-005",
            Severity.HIGH,
            "/opt/py/site/x.py could not be read (EACCES); it was not verified",
            location="/opt/py/site/x.py",
        ),
    ]


def test_a_file_state_with_tampering_becomes_critical_findings(env: Env) -> None:
    # the two halves together: rows decided on disk, findings from the rows
    env.install("pkg", PKG)
    (env.site / "pkg" / "mod.py").write_bytes(b"Y = 3\n")
    (env.site / "pkg" / "__init__.py").unlink()
    state, _, _ = env.state()
    snap = _snap(state.distributions, orphans=state.orphans)
    found = [(f.rule_id, f.severity, f.location) for f in _record_findings(snap)]
    assert found == [
        ("TWA-REC-002", Severity.HIGH, str(env.site / "pkg" / "__init__.py")),
        ("TWA-REC-001", Severity.CRITICAL, str(env.site / "pkg" / "mod.py")),
        ("TWA-REC-003", Severity.INFO, "/opt/py"),
    ]


def _base_findings(a: Snapshot, b: Snapshot, record_checked: bool = False) -> list[Finding]:
    return diff_snapshots(a, b).baseline_findings(record_checked=record_checked)


def test_a_file_that_differs_from_the_baseline_is_reported_by_its_record_status() -> None:
    base = _snap(
        [
            _dist(
                [
                    DistFile("demo/a.py", OK, A, None),
                    DistFile("demo/b.py", OK, A, None),
                    DistFile("demo/c.py", OK, A, None),
                    DistFile("demo/d.pyc", NO_HASH, A, None),
                    DistFile("demo/e.py", MODIFIED, B, "sha256:" + A),
                    DistFile("demo/f.pyc", NO_HASH, A, None),
                    DistFile("demo/same.py", OK, A, None),
                    DistFile("demo/gone.py", OK, A, None),
                ]
            )
        ]
    )
    node = _snap(
        [
            _dist(
                [
                    # RECORD rewritten together with the file
                    DistFile("demo/a.py", OK, B, None),
                    DistFile("demo/b.py", MODIFIED, B, "sha256:" + A),
                    DistFile("demo/c.py", MISSING, None, "sha256:" + A),
                    DistFile("demo/d.pyc", NO_HASH, B, None),
                    # restored to what RECORD says
                    DistFile("demo/e.py", OK, A, None),
                    # unreadable now: no digest to compare
                    DistFile("demo/f.pyc", NO_HASH, None, None),
                    DistFile("demo/same.py", OK, A, None),
                    DistFile("demo/new.py", OK, C, None),
                ]
            )
        ],
        prefix="/srv/other",
    )
    d = diff_snapshots(base, node)
    (dd,) = d.distributions
    assert (dd.name, dd.change, dd.version_a, dd.version_b) == ("Demo_Pkg", "files", "1.0", "1.0")
    assert dd.changed == (
        ("demo/a.py", A, B, "ok", "ok"),
        ("demo/b.py", A, B, "ok", "modified"),
        ("demo/c.py", A, None, "ok", "missing"),
        ("demo/d.pyc", A, B, "no-hash", "no-hash"),
        ("demo/e.py", B, A, "modified", "ok"),
        ("demo/f.pyc", A, None, "no-hash", "no-hash"),
    )
    assert (dd.added, dd.removed) == (("demo/new.py",), ("demo/gone.py",))
    # the interpreter's path differs (another prefix): MEDIUM, content the same
    interp = Finding(
        "TWA-BASE-010",
        Severity.MEDIUM,
        "interpreter path changed: /opt/py/bin/python3.11 -> /srv/other/bin/python3.11",
        location="interpreter:path",
        evidence={"baseline": "/opt/py/bin/python3.11", "current": "/srv/other/bin/python3.11"},
    )
    loc = "Demo_Pkg:demo/"
    expected = [
        interp,
        Finding(
            "TWA-BASE-001",
            Severity.CRITICAL,
            "Demo_Pkg 1.0: demo/a.py matches RECORD but differs from the baseline: RECORD was "
            "rewritten with the file",
            location=loc + "a.py",
            evidence={"baseline_sha256": A, "current_sha256": B},
        ),
        Finding(
            "TWA-BASE-001",
            Severity.CRITICAL,
            "Demo_Pkg 1.0: demo/b.py differs from the reference and is modified against RECORD",
            location=loc + "b.py",
            evidence={"baseline_sha256": A, "current_sha256": B, "status": "modified"},
        ),
        Finding(
            "TWA-BASE-001",
            Severity.HIGH,
            "Demo_Pkg 1.0: demo/c.py differs from the reference and is missing against RECORD",
            location=loc + "c.py",
            evidence={"baseline_sha256": A, "current_sha256": None, "status": "missing"},
        ),
        Finding(
            "TWA-BASE-002",
            Severity.HIGH,
            "Demo_Pkg 1.0: demo/d.pyc (no RECORD hash) differs from the baseline",
            location=loc + "d.pyc",
            evidence={"baseline_sha256": A, "current_sha256": B},
        ),
        Finding(
            "TWA-BASE-002",
            Severity.HIGH,
            "Demo_Pkg 1.0: demo/f.pyc (no RECORD hash) differs from the baseline",
            location=loc + "f.pyc",
            evidence={"baseline_sha256": A, "current_sha256": None},
        ),
        Finding(
            "TWA-BASE-003",
            Severity.HIGH,
            "Demo_Pkg 1.0: 1 file(s) added, 1 removed since the baseline",
            location="Demo_Pkg",
            evidence={"added": ["demo/new.py"], "removed": ["demo/gone.py"]},
        ),
    ]
    assert _base_findings(base, node) == expected
    # attest verify reports RECORD failures itself: only the rest is left
    assert _base_findings(base, node, record_checked=True) == [
        f for f in expected if f.location not in (loc + "b.py", loc + "c.py")
    ]
    assert d.findings == tuple(expected)


def test_distributions_added_removed_or_of_another_version_since_the_baseline() -> None:
    demo = _dist([DistFile("demo/a.py", OK, A, None)])
    renamed = dataclasses.replace(demo, name="demo.pkg", version="2.0")
    gone = _dist([], name="gone", version="0.1")
    new = _dist([], name="Newcomer", version="3.0")
    dup = dataclasses.replace(new, version="9.9")
    base = _snap([demo, gone])
    node = _snap([renamed, new, dup])
    d = diff_snapshots(base, node)
    assert [(x.name, x.change, x.version_a, x.version_b) for x in d.distributions] == [
        ("demo.pkg", "version", "1.0", "2.0"),
        ("gone", "removed", "0.1", None),
        ("Newcomer", "added", None, "3.0"),
    ]
    assert list(d.findings) == [
        Finding(
            "TWA-BASE-006",
            Severity.MEDIUM,
            "distribution demo.pkg changed version 1.0 -> 2.0",
            location="demo.pkg",
            evidence={"baseline": "1.0", "current": "2.0"},
        ),
        Finding(
            "TWA-BASE-005",
            Severity.MEDIUM,
            "distribution gone 0.1 was removed since the baseline",
            location="gone",
            evidence={"version": "0.1"},
        ),
        Finding(
            "TWA-BASE-004",
            Severity.HIGH,
            "distribution Newcomer 3.0 was installed since the baseline",
            location="Newcomer",
            evidence={"version": "3.0"},
        ),
    ]
    assert diff_snapshots(base, base).empty


def test_snapshots_at_other_prefixes_compare_file_by_file() -> None:
    def snap(prefix: str, base: str, sha: str, machine: str) -> Snapshot:
        site = f"{prefix}/site"
        return _snap(
            [],
            prefix,
            interpreter=_interp(prefix, base),
            # a .pth file is compared as a hook only, not again as an orphan
            orphans=(Orphan(f"{site}/x.py", A, 1), Orphan(f"{site}/h.pth", sha, 1)),
            pth_files=(PthFile(f"{site}/h.pth", None, A, (), ()),),
            customize=(
                CustomizeModule(
                    "sitecustomize", f"{site}/sitecustomize.py", None, A, "site-packages", True
                ),
            ),
            path_files=(
                PathFile(f"{prefix}/lib/a.py", A, 1, "ok", None, None),
                PathFile(f"{base}/lib/b.py", A, 1, "ok", None, None),
                PathFile("/usr/share/tw/x.py", sha, 1, "unvouched", None, None),
            ),
            platform={"node": prefix, "machine": machine},
        )

    d = diff_snapshots(
        snap("/opt/py", "/opt/base", A, "x86_64"), snap("/srv/py", "/srv/base", B, "arm64")
    )
    assert (d.orphans, d.pth_files, d.customize) == ({}, {}, {})
    assert d.platform == {"machine": ("x86_64", "arm64")}
    assert d.path_files == {"/usr/share/tw/x.py": (A, B)}
    assert d.interpreter == {"path": ("/opt/py/bin/python3.11", "/srv/py/bin/python3.11")}
    same = diff_snapshots(
        snap("/opt/py", "/opt/base", A, "x"), snap("/srv/py", "/srv/base", A, "y")
    )
    assert same.path_files == {}
    assert not same.empty  # the interpreter's path
    assert diff_snapshots(
        snap("/opt/py", "/opt/base", A, "x"), snap("/opt/py", "/opt/base", A, "y")
    ).empty


def test_interpreter_environment_and_code_changes_since_the_baseline() -> None:
    base = _snap([], environment={"PYTHONPATH": "/srv/code", "LD_PRELOAD": "/lib/a.so", "FOO": "1"})
    node = _snap(
        [],
        interpreter=dataclasses.replace(_interp(), version="3.11.10", sha256="bb" * 32),
        environment={"PYTHONPATH": "/tmp/evil", "FOO": "1"},
        code=(CodeDir("/srv/code", "git", "c0ffee", True, None, {}, "d" * 64),),
    )
    base = dataclasses.replace(
        base, code=(CodeDir("/srv/code", "files", None, False, None, {}, "e" * 64),)
    )
    assert list(diff_snapshots(base, node).findings) == [
        Finding(
            "TWA-BASE-010",
            Severity.HIGH,
            "interpreter version changed: 3.11.9 -> 3.11.10",
            location="interpreter:version",
            evidence={"baseline": "3.11.9", "current": "3.11.10"},
        ),
        Finding(
            "TWA-BASE-010",
            Severity.HIGH,
            f"interpreter sha256 changed: {'aa' * 32} -> {'bb' * 32}",
            location="interpreter:sha256",
            evidence={"baseline": "aa" * 32, "current": "bb" * 32},
        ),
        Finding(
            "TWA-BASE-011",
            Severity.HIGH,
            "environment variable LD_PRELOAD differs from the baseline: '/lib/a.so' -> None",
            location="env:LD_PRELOAD",
            evidence={"baseline": "/lib/a.so", "current": None},
        ),
        Finding(
            "TWA-BASE-011",
            Severity.MEDIUM,
            "environment variable PYTHONPATH differs from the baseline: '/srv/code' -> '/tmp/evil'",
            location="env:PYTHONPATH",
            evidence={"baseline": "/srv/code", "current": "/tmp/evil"},
        ),
        Finding(
            "TWA-BASE-012",
            Severity.MEDIUM,
            f"code directory /srv/code differs from the baseline: files:{'e' * 16} -> "
            f"c0ffee:{'d' * 16}",
            location="/srv/code",
            evidence={"baseline": f"files:{'e' * 16}", "current": f"c0ffee:{'d' * 16}"},
        ),
    ]


def test_the_baseline_comparison_reports_every_changed_hook_and_path_file() -> None:
    site = "/opt/py/site"

    def snap(sha: str, extra: bool) -> Snapshot:
        orphans = [Orphan(f"{site}/x.py", sha, 1), Orphan(f"{site}/h.pth", sha, 1)]
        if extra:
            orphans.append(Orphan(f"{site}/evil.so", C, 1))
        return _snap(
            [],
            orphans=tuple(orphans),
            pth_files=(PthFile(f"{site}/h.pth", None, sha, (), ()),),
            customize=(
                CustomizeModule(
                    "sitecustomize", f"{site}/sitecustomize.py", None, sha, "site-packages", True
                ),
            ),
            path_files=(
                PathFile("/opt/py/lib/random.py", sha, 1, "ok", None, None),
                PathFile("/opt/py/lib/link.py", None, 1, "symlink", None, sha[:4]),
            ),
        )

    base, node = snap(A, False), snap(B, True)
    d = diff_snapshots(base, node)
    assert d.orphans == {"<site>/evil.so": (None, C), "<site>/x.py": (A, B)}
    assert d.pth_files == {"<site>/h.pth": (A, B)}
    assert d.customize == {"<site>/sitecustomize.py": (A, B)}
    assert d.path_files == {
        "<prefix>/lib/link.py": ("symlink:" + A[:4], "symlink:" + B[:4]),
        "<prefix>/lib/random.py": (A, B),
    }
    assert list(d.findings) == [
        Finding(
            "TWA-BASE-007",
            Severity.HIGH,
            "new file owned by no distribution since the baseline: <site>/evil.so",
            location="<site>/evil.so",
            evidence={"baseline_sha256": None, "current_sha256": C},
        ),
        Finding(
            "TWA-BASE-007",
            Severity.HIGH,
            "changed file owned by no distribution since the baseline: <site>/x.py",
            location="<site>/x.py",
            evidence={"baseline_sha256": A, "current_sha256": B},
        ),
        Finding(
            "TWA-BASE-008",
            Severity.CRITICAL,
            "changed sitecustomize.py since the baseline: <site>/sitecustomize.py runs at "
            "every interpreter start",
            location="<site>/sitecustomize.py",
            evidence={"baseline_sha256": A, "current_sha256": B},
        ),
        Finding(
            "TWA-BASE-009",
            Severity.HIGH,
            "changed .pth file since the baseline: <site>/h.pth",
            location="<site>/h.pth",
            evidence={"baseline_sha256": A, "current_sha256": B},
        ),
        Finding(
            "TWA-BASE-013",
            Severity.CRITICAL,
            "changed file on sys.path outside site-packages since the baseline: "
            "<prefix>/lib/link.py",
            location="<prefix>/lib/link.py",
            evidence={"baseline": "symlink:" + A[:4], "current": "symlink:" + B[:4]},
        ),
        Finding(
            "TWA-BASE-013",
            Severity.CRITICAL,
            "changed file on sys.path outside site-packages since the baseline: "
            "<prefix>/lib/random.py",
            location="<prefix>/lib/random.py",
            evidence={"baseline": A, "current": B},
        ),
    ]


def test_an_orphan_link_is_high_unless_a_distribution_owns_what_is_below_it() -> None:
    """A symbolic link is the one orphan with no digest that is not unreadable: Python imports
    through it and the walk does not enter it."""
    site = "/opt/py/site"
    snap = _snap(
        [_dist([DistFile("demo/__init__.py", OK, A, None), DistFile("top.py", OK, B, None)])],
        orphans=(
            Orphan(f"{site}/pkg", None, 20),  # a link nobody owns: HIGH
            Orphan(f"{site}/demo", None, 20),  # a linked package directory RECORD covers
            Orphan(f"{site}/top", None, 20),  # a file named like an owned file is no folder
            Orphan(f"{site}/gone", None, 0),  # unreadable: reported by TWA-REC-005 instead
            Orphan(f"{site}/data.txt", C, 5),
        ),
        unreadable={f"{site}/gone": "PermissionError"},
    )
    got = [
        (f.location, f.severity, f.message)
        for f in check_snapshot(snap)
        if f.rule_id == "TWA-ORPH-001"
    ]
    no = "is inside site-packages but no distribution installed it"
    assert got == [
        (
            f"{site}/pkg",
            Severity.HIGH,
            f"{site}/pkg {no} (a symbolic link Python imports through; what it leads to was "
            "not checked)",
        ),
        (f"{site}/demo", Severity.LOW, f"{site}/demo {no}"),
        (
            f"{site}/top",
            Severity.HIGH,
            f"{site}/top {no} (a symbolic link Python imports through; what it leads to was "
            "not checked)",
        ),
        (f"{site}/gone", Severity.LOW, f"{site}/gone {no}"),
        (f"{site}/data.txt", Severity.LOW, f"{site}/data.txt {no}"),
    ]


def test_check_snapshot_reports_orphans_hooks_and_loader_variables_exactly() -> None:
    site = "/opt/py/site"
    long_import = "import os; " + "x = 1; " * 30
    snap = _snap(
        [],
        orphans=(
            # hooks: reported by their own rules, not as orphans (nor do they end the list)
            Orphan(f"{site}/h.pth", A, 1),
            Orphan(f"{site}/evil.py", A, 10),
            Orphan(f"{site}/sitecustomize.py", A, 1),
            Orphan(f"{site}/libx.so.1", B, 20),
            Orphan(f"{site}/notes.txt", C, 30),
            # ".so." counts in the file's name only
            Orphan(f"{site}/lib.so.d/readme.txt", C, 40),
        ),
        pth_files=(
            PthFile(f"{site}/h.pth", None, A, (long_import,), ()),
            PthFile(f"{site}/p.pth", None, B, (), ("/srv/a", "/srv/b")),
            PthFile(f"{site}/o.pth", "pkg", C, ("import pkg",), ()),
            PthFile(f"{site}/q.pth", "pkg", C, (), ("/srv/c",)),
        ),
        customize=(
            CustomizeModule(
                "sitecustomize", f"{site}/sitecustomize.py", None, A, "site-packages", True
            ),
            CustomizeModule(
                "usercustomize", "/srv/u/usercustomize.py", None, B, "pythonpath", False
            ),
            CustomizeModule(
                "sitecustomize", "/opt/py/lib/sitecustomize.py", None, C, "stdlib", False
            ),
            CustomizeModule(
                "sitecustomize", f"{site}/pkg/sitecustomize.py", "pkg", C, "site-packages", False
            ),
        ),
        os_packages={"python3-yaml": 3, "python3-six": 2},
        environment={
            "PYTHONHOME": "/h",
            "LD_PRELOAD": "/x.so" + "x" * 250,
            "PYTHONPATH": "",
            "PYTHONNOUSERSITE": "1",
            "FOO": "1",
            "TORCH_HOME": "/t",
        },
        env_effects=(
            EnvEffect("PYTHONHOME", "LOW", "effect a"),
            EnvEffect("PYTHONHOME", "HIGH", "effect b"),
            EnvEffect("TORCH_HOME", "MEDIUM", "effect c", {"k": 1}),
        ),
    )
    loud = " and runs at every interpreter start"
    preload = describe("LD_PRELOAD")
    assert preload is not None
    assert check_snapshot(snap) == [
        Finding(
            "TWA-REC-006",
            Severity.INFO,
            "5 file(s) in site directories belong to 2 OS package(s) (dpkg) without RECORD; "
            "verify them with `debsums` or `dpkg --verify`",
            location="/opt/py",
            evidence={"packages": {"python3-yaml": 3, "python3-six": 2}},
        ),
        Finding(
            "TWA-ORPH-001",
            Severity.HIGH,
            f"{site}/evil.py is inside site-packages but no distribution installed it "
            "(importable code)",
            location=f"{site}/evil.py",
            evidence={"sha256": A, "size": 10},
        ),
        Finding(
            "TWA-ORPH-001",
            Severity.HIGH,
            f"{site}/libx.so.1 is inside site-packages but no distribution installed it "
            "(importable code)",
            location=f"{site}/libx.so.1",
            evidence={"sha256": B, "size": 20},
        ),
        Finding(
            "TWA-ORPH-001",
            Severity.LOW,
            f"{site}/notes.txt is inside site-packages but no distribution installed it",
            location=f"{site}/notes.txt",
            evidence={"sha256": C, "size": 30},
        ),
        Finding(
            "TWA-ORPH-001",
            Severity.LOW,
            f"{site}/lib.so.d/readme.txt is inside site-packages but no distribution installed it",
            location=f"{site}/lib.so.d/readme.txt",
            evidence={"sha256": C, "size": 40},
        ),
        Finding(
            "TWA-PTH-001",
            Severity.CRITICAL,
            f"{site}/h.pth belongs to no distribution and runs code at every interpreter start: "
            + long_import[:120],
            location=f"{site}/h.pth",
            evidence={"import_lines": [long_import], "sha256": A},
        ),
        Finding(
            "TWA-PTH-002",
            Severity.MEDIUM,
            f"{site}/p.pth belongs to no distribution and adds 2 directory(ies) to sys.path",
            location=f"{site}/p.pth",
            evidence={"path_entries": ["/srv/a", "/srv/b"], "sha256": B},
        ),
        Finding(
            "TWA-PTH-003",
            Severity.INFO,
            f"{site}/o.pth (from pkg) runs code at every interpreter start",
            location=f"{site}/o.pth",
            evidence={"owner": "pkg", "import_lines": ["import pkg"]},
        ),
        Finding(
            "TWA-CUST-001",
            Severity.CRITICAL,
            f"sitecustomize at {site}/sitecustomize.py (site-packages) belongs to no "
            "distribution" + loud,
            location=f"{site}/sitecustomize.py",
            evidence={"module": "sitecustomize", "active": True, "sha256": A},
        ),
        Finding(
            "TWA-CUST-001",
            Severity.CRITICAL,
            "usercustomize at /srv/u/usercustomize.py (pythonpath) belongs to no distribution",
            location="/srv/u/usercustomize.py",
            evidence={"module": "usercustomize", "active": False, "sha256": B},
        ),
        Finding(
            "TWA-CUST-002",
            Severity.MEDIUM,
            "sitecustomize at /opt/py/lib/sitecustomize.py comes from the Python installation "
            "(stdlib); verify it with its package manager",
            location="/opt/py/lib/sitecustomize.py",
            evidence={"module": "sitecustomize", "active": False, "sha256": C},
        ),
        Finding(
            "TWA-CUST-002",
            Severity.MEDIUM,
            f"sitecustomize at {site}/pkg/sitecustomize.py comes from distribution pkg; verify "
            "it with its package manager",
            location=f"{site}/pkg/sitecustomize.py",
            evidence={"module": "sitecustomize", "active": False, "sha256": C},
        ),
        Finding(
            "TWA-ENV-001",
            Severity.HIGH,
            "effect b (and 1 more)",
            location="env:PYTHONHOME",
            evidence={
                "value": "/h",
                "effects": [
                    {
                        "variable": "PYTHONHOME",
                        "severity": "LOW",
                        "effect": "effect a",
                        "evidence": {},
                    },
                    {
                        "variable": "PYTHONHOME",
                        "severity": "HIGH",
                        "effect": "effect b",
                        "evidence": {},
                    },
                ],
            },
        ),
        Finding(
            "TWA-ENV-001",
            Severity.HIGH,
            f"LD_PRELOAD is set ({preload.reason}): " + ("/x.so" + "x" * 250)[:200],
            location="env:LD_PRELOAD",
            evidence={"value": "/x.so" + "x" * 250},
        ),
        Finding(
            "TWA-ENV-001",
            Severity.MEDIUM,
            "effect c",
            location="env:TORCH_HOME",
            evidence={
                "value": "/t",
                "effects": [
                    {
                        "variable": "TORCH_HOME",
                        "severity": "MEDIUM",
                        "effect": "effect c",
                        "evidence": {"k": 1},
                    }
                ],
            },
        ),
    ]


def test_files_dpkg_lists_belong_to_an_os_package_only_below_usr(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.install("pkg", PKG)
    site = env.site
    (site / "yaml" / "__pycache__").mkdir(parents=True)
    (site / "yaml" / "notcache").mkdir()
    (site / "yaml" / "__init__.py").write_bytes(b"Y = 1\n")
    compiled = site / "yaml" / "__pycache__" / f"__init__.{TAG}.pyc"
    compiled.write_bytes(b"py3compile")
    stray = site / "yaml" / "notcache" / f"__init__.{TAG}.pyc"
    stray.write_bytes(b"stray")
    # named like the package's bytecode, but not bytecode: dpkg did not install it
    planted = site / "yaml" / "__pycache__" / f"__init__.{TAG}.so"
    planted.write_bytes(b"planted")
    meta = site / "PyYAML-6.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0\n\n")
    (site / "deb.pth").write_bytes(b"import yaml\n")
    (site / "loose.py").write_bytes(b"L = 1\n")
    info = tmp_path / "dpkg-info"
    info.mkdir()
    listed = [site / "yaml", site / "yaml" / "__init__.py", meta, meta / "METADATA"]
    (info / "python3-yaml:amd64.list").write_text(
        "\n".join(str(p) for p in [*listed, site / "deb.pth"]) + "\n"
    )
    # a list naming no *-packages directory is not read
    (info / "tool.list").write_text(f"/usr/bin/tool\n{tmp_path}/x\n")
    monkeypatch.setattr(ospkg, "DPKG_INFO", str(info))
    pths = [read_pth(str(site / "deb.pth"))]

    apt, _, _ = env.state(pths=pths, site_dirs=["/usr/lib/python3/tw-absent-dist-packages"])
    assert apt.os_packages == {"python3-yaml": 4}
    assert [o.path for o in apt.orphans] == [str(site / "loose.py"), str(planted), str(stray)]
    assert [(d.name, d.os_package, d.record_problem) for d in apt.distributions] == [
        ("PyYAML", "python3-yaml", f"{meta / 'RECORD'} is missing or unreadable"),
        ("pkg", None, ""),
    ]
    assert apt.pth_files[0].owner == "dpkg:python3-yaml"
    assert apt.pth_files[0].sha256 == _sha(b"import yaml\n")

    # dpkg installs below /usr only: elsewhere the same files belong to nobody
    venv, _, _ = env.state(pths=pths)
    assert venv.os_packages == {}
    assert [o.path for o in venv.orphans] == sorted(
        str(p)
        for p in (
            site / "loose.py",
            stray,
            compiled,
            site / "yaml" / "__init__.py",
            meta / "METADATA",
            site / "deb.pth",
            planted,
        )
    )
    assert [d.os_package for d in venv.distributions] == [None, None]
    assert venv.pth_files[0].owner is None


def test_a_symlink_that_cannot_be_read_any_more_has_no_target(tmp_path: Path) -> None:
    link = tmp_path / "lib" / "link.py"
    link.parent.mkdir()
    link.symlink_to("random.py")
    stats = {str(link): os.lstat(link)}
    link.unlink()  # removed between the walk and the vouching
    out, _ = _vouch(stats, {}, {}, [str(tmp_path)])
    assert out == (PathFile(str(link), None, 9, "symlink", None, None),)


@pytest.mark.skipif(
    shutil.which("rpmbuild") is None or not os.access(syspath.RPM_BINARY, os.X_OK),
    reason="rpm and rpmbuild are not installed",
)
@pytest.mark.parametrize(("algo", "alg"), [(8, "sha256"), (10, "sha512")])
def test_rpm_digests_vouch_for_files_and_an_edit_is_modified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, algo: int, alg: str
) -> None:
    lib = tmp_path / "usr" / "lib64" / "python3.11"
    lib.mkdir(parents=True)
    ok, edited, by_conda = lib / "random.py", lib / "os.py", lib / "conda.py"
    for p in (ok, edited, by_conda):
        p.write_bytes(p.name.encode())
    (tmp_path / "rpm").mkdir()
    db = make_rpm_db(tmp_path / "rpm", [ok, edited, by_conda], digest_algo=algo)
    monkeypatch.setattr(syspath, "RPM_DBPATHS", (str(db),))
    monkeypatch.setattr(syspath, "RPM_PREFIXES", (str(tmp_path) + "/",))
    prefix = tmp_path / "usr"
    (prefix / "conda-meta").mkdir()
    rows = [{"_path": "lib64/python3.11/conda.py", "sha256": _sha(b"conda.py")}]
    (prefix / "conda-meta" / "c.json").write_text(
        json.dumps({"name": "c", "paths_data": {"paths": rows}})
    )
    edited.write_bytes(b"import evil\n")
    link = lib / "link.py"
    link.symlink_to("random.py")
    stats, digests = _hashed([ok, edited, by_conda, link])
    out, problems = _vouch(stats, digests, {}, [str(prefix)])
    assert problems == {}
    want = hashlib.new(alg, b"os.py").hexdigest()
    assert out == (
        PathFile(str(by_conda), _sha(b"conda.py"), 8, "ok", "conda:c", None),
        PathFile(str(link), None, 9, "symlink", None, "random.py"),
        PathFile(
            str(edited), _sha(b"import evil\n"), 12, "modified", "rpm:twstdlib", f"{alg}:{want}"
        ),
        PathFile(str(ok), _sha(b"random.py"), 9, "ok", "rpm:twstdlib", None),
    )


@pytest.mark.skipif(not os.access(syspath.RPM_BINARY, os.X_OK), reason="rpm is not installed")
def test_an_rpm_database_that_cannot_be_read_is_reported_when_it_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "rpmdb"
    db.mkdir()
    (db / "rpmdb.sqlite").write_bytes(b"not a database")
    monkeypatch.setattr(syspath, "RPM_DBPATHS", (str(db),))
    monkeypatch.setattr(syspath, "RPM_PREFIXES", (str(tmp_path) + "/",))
    lib = tmp_path / "usr" / "lib"
    lib.mkdir(parents=True)
    by_conda, by_dpkg, plain = lib / "c.py", lib / "d.py", lib / "plain.py"
    for p in (by_conda, by_dpkg, plain):
        p.write_bytes(p.name.encode())
    (lib / "link.py").symlink_to("plain.py")
    prefix = tmp_path / "usr"
    (prefix / "conda-meta").mkdir()
    rows = [{"_path": "lib/c.py", "sha256": _sha(b"c.py")}]
    (prefix / "conda-meta" / "c.json").write_text(
        json.dumps({"name": "c", "paths_data": {"paths": rows}})
    )
    _dpkg(tmp_path, monkeypatch, [_md5(b"d.py") + "  " + str(by_dpkg).lstrip("/")])
    # every file vouched for otherwise, or a link: the database is never asked
    stats, digests = _hashed([by_conda, by_dpkg, lib / "link.py"])
    out, problems = _vouch(stats, digests, {}, [str(prefix)])
    assert problems == {}
    assert [(f.status, f.source) for f in out] == [
        ("ok", "conda:c"),
        ("ok", "dpkg:libpython3.11-stdlib"),
        ("symlink", None),
    ]
    # a file only rpm could vouch for: the unreadable database is a problem, the file unvouched
    stats, digests = _hashed([plain])
    out, problems = _vouch(stats, digests, {}, [str(prefix)])
    assert list(problems) == [str(db)]
    assert problems[str(db)].startswith("an RPM database rpm could not read (exit 1: ")
    assert out == (PathFile(str(plain), _sha(b"plain.py"), 8, "unvouched", None, None),)


def test_new_and_removed_hooks_and_path_files_since_the_baseline() -> None:
    site = "/opt/py/site"
    # each removed item sorts before a new or changed one: the comparison goes on past it
    user = CustomizeModule(
        "usercustomize", f"{site}/a/usercustomize.py", None, A, "site-packages", True
    )
    site_mod = CustomizeModule(
        "sitecustomize", f"{site}/sub/sitecustomize.py", None, A, "site-packages", True
    )
    base = _snap(
        [],
        interpreter=_interp("/opt/py", "/opt/base"),
        orphans=(Orphan("/aaa/old.py", A, 1), Orphan("/srv/outside.py", A, 1)),
        pth_files=(PthFile(f"{site}/a-old.pth", None, A, (), ()),),
        customize=(user,),
        path_files=(
            PathFile("/opt/py/lib/gone.py", A, 1, "ok", None, None),
            PathFile("/opt/base/lib/base.py", A, 1, "ok", None, None),
        ),
        environment={"PATH": "/usr/bin"},
    )
    node = _snap(
        [],
        interpreter=dataclasses.replace(_interp("/opt/py", "/opt/base"), implementation="pypy"),
        orphans=(Orphan("/srv/outside.py", B, 1),),
        pth_files=(PthFile(f"{site}/new.pth", None, B, (), ()),),
        customize=(site_mod,),
        path_files=(
            PathFile("/opt/base/lib/base.py", B, 1, "ok", None, None),
            PathFile("/opt/py/lib/notes.txt", B, 1, "unvouched", None, None),
            PathFile("/opt/py/lib/libx.so.1", C, 1, "unvouched", None, None),
            # ".so." counts in the file's name only
            PathFile("/opt/py/lib/lib.so.d/readme.txt", C, 1, "unvouched", None, None),
        ),
        environment={"PATH": "/usr/bin", "TW_NEW": "1"},
    )
    d = diff_snapshots(base, node)
    assert (d.a, d.b) == ("A", "B")
    labelled = diff_snapshots(base, node, a_label="baseline.json", b_label="node7")
    assert (labelled.a, labelled.b) == ("baseline.json", "node7")
    assert d.orphans == {"/aaa/old.py": (A, None), "/srv/outside.py": (A, B)}
    assert d.customize == {
        "<site>/a/usercustomize.py": (A, None),
        "<site>/sub/sitecustomize.py": (None, A),
    }
    assert d.pth_files == {"<site>/a-old.pth": (A, None), "<site>/new.pth": (None, B)}
    assert d.path_files == {
        "<base>/lib/base.py": (A, B),
        "<prefix>/lib/gone.py": (A, None),
        "<prefix>/lib/lib.so.d/readme.txt": (None, C),
        "<prefix>/lib/libx.so.1": (None, C),
        "<prefix>/lib/notes.txt": (None, B),
    }

    def f(rule: str, sev: Severity, msg: str, loc: str, **ev: object) -> Finding:
        return Finding(rule, sev, msg, location=loc, evidence=ev)

    outside = "file on sys.path outside site-packages since the baseline"
    assert list(d.findings) == [
        f(
            "TWA-BASE-010",
            Severity.HIGH,
            "interpreter implementation changed: cpython -> pypy",
            "interpreter:implementation",
            baseline="cpython",
            current="pypy",
        ),
        f(
            "TWA-BASE-007",
            Severity.HIGH,
            "changed file owned by no distribution since the baseline: /srv/outside.py",
            "/srv/outside.py",
            baseline_sha256=A,
            current_sha256=B,
        ),
        f(
            "TWA-BASE-008",
            Severity.CRITICAL,
            "new sitecustomize.py since the baseline: <site>/sub/sitecustomize.py runs at every "
            "interpreter start",
            "<site>/sub/sitecustomize.py",
            baseline_sha256=None,
            current_sha256=A,
        ),
        f(
            "TWA-BASE-009",
            Severity.HIGH,
            "new .pth file since the baseline: <site>/new.pth",
            "<site>/new.pth",
            baseline_sha256=None,
            current_sha256=B,
        ),
        f(
            "TWA-BASE-011",
            Severity.MEDIUM,
            "environment variable TW_NEW differs from the baseline: None -> '1'",
            "env:TW_NEW",
            baseline=None,
            current="1",
        ),
        f(
            "TWA-BASE-013",
            Severity.CRITICAL,
            f"changed {outside}: <base>/lib/base.py",
            "<base>/lib/base.py",
            baseline=A,
            current=B,
        ),
        f(
            "TWA-BASE-013",
            Severity.MEDIUM,
            f"removed {outside}: <prefix>/lib/gone.py",
            "<prefix>/lib/gone.py",
            baseline=A,
            current=None,
        ),
        f(
            "TWA-BASE-013",
            Severity.HIGH,
            f"new {outside}: <prefix>/lib/lib.so.d/readme.txt",
            "<prefix>/lib/lib.so.d/readme.txt",
            baseline=None,
            current=C,
        ),
        f(
            "TWA-BASE-013",
            Severity.CRITICAL,
            f"new {outside}: <prefix>/lib/libx.so.1",
            "<prefix>/lib/libx.so.1",
            baseline=None,
            current=C,
        ),
        f(
            "TWA-BASE-013",
            Severity.HIGH,
            f"new {outside}: <prefix>/lib/notes.txt",
            "<prefix>/lib/notes.txt",
            baseline=None,
            current=B,
        ),
    ]


def test_files_added_or_removed_alone_and_the_evidence_kept() -> None:
    files = [DistFile(f"demo/m{i:02}.py", OK, A, None) for i in range(52)]
    base = _snap([_dist(files[:1]), _dist(files, name="big")])
    node = _snap([_dist(files), _dist(files[:1], name="big")])
    # distributions in the order of their normalised names; the evidence lists the first 50
    assert list(diff_snapshots(base, node).findings) == [
        Finding(
            "TWA-BASE-003",
            Severity.HIGH,
            "big 1.0: 0 file(s) added, 51 removed since the baseline",
            location="big",
            evidence={"added": [], "removed": [f.path for f in files[1:51]]},
        ),
        Finding(
            "TWA-BASE-003",
            Severity.HIGH,
            "Demo_Pkg 1.0: 51 file(s) added, 0 removed since the baseline",
            location="Demo_Pkg",
            evidence={"added": [f.path for f in files[1:51]], "removed": []},
        ),
    ]


def test_files_without_a_record_hash_are_counted_for_the_ten_largest_distributions() -> None:
    dists = [
        _dist(
            [DistFile(f"d{n}/f{i}.pyc", NO_HASH, A, None) for i in range(n)],
            name=f"d{n:02}",
            metadata_dir=f"/opt/py/site/d{n}",
        )
        for n in range(1, 12)
    ]
    (summary,) = _record_findings(_snap(dists))
    assert summary.message.startswith("66 installed file(s) have no RECORD hash")
    assert list(summary.evidence["per_distribution"].items()) == [
        (f"d{n:02}", n) for n in range(11, 1, -1)
    ]


def test_a_symlink_swapped_in_for_a_file_without_a_record_hash_differs_from_the_baseline(
    env: Env, tmp_path: Path
) -> None:
    # egg-info installs list their files without hashes: only a baseline covers them
    (env.site / "legacy").mkdir()
    (env.site / "legacy" / "__init__.py").write_bytes(b"L = 1\n")
    egg = env.site / "legacy-2.0.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.0\nName: legacy\nVersion: 2.0\n\n")
    (egg / "installed-files.txt").write_text("../legacy/__init__.py\n")
    before, _, _ = env.state()
    evil = tmp_path / "evil.py"
    evil.write_bytes(b"import os\n")
    (env.site / "legacy" / "__init__.py").unlink()
    (env.site / "legacy" / "__init__.py").symlink_to(evil)
    after, _, _ = env.state()
    assert env.rows(after, "legacy") == [("legacy/__init__.py", NO_HASH, None, None)]
    base, node = _snap(before.distributions), _snap(after.distributions)
    assert _base_findings(base, node, record_checked=True) == [
        Finding(
            "TWA-BASE-002",
            Severity.HIGH,
            "legacy 2.0: legacy/__init__.py (no RECORD hash) differs from the baseline",
            location="legacy:legacy/__init__.py",
            evidence={"baseline_sha256": _sha(b"L = 1\n"), "current_sha256": None},
        )
    ]


def test_bytecode_of_a_file_installed_into_another_site_directory_belongs_to_it(
    env: Env,
) -> None:
    site2 = env.site.parent / "site2"
    (site2 / "x" / "__pycache__").mkdir(parents=True)
    env.install("pkg", {**PKG, "../site2/x/mod.py": b"M = 1\n"})
    pyc = site2 / "x" / "__pycache__" / f"mod.{TAG}.pyc"
    pyc.write_bytes(b"bytecode")
    stats = env.walk()
    _walk(str(site2), stats, set())
    state, _, _ = env.state(stats=stats, site_dirs=[str(site2)])
    assert env.rows(state)[:2] == [
        (f"../site2/x/__pycache__/mod.{TAG}.pyc", NO_HASH, _sha(b"bytecode"), None),
        ("../site2/x/mod.py", OK, _sha(b"M = 1\n"), None),
    ]
    assert state.orphans == ()


def test_the_installer_and_direct_url_are_kept_and_a_row_listed_twice_is_checked_twice(
    env: Env,
) -> None:
    info = "pkg-1.0.dist-info"
    url = b'{"url": "file:///src/pkg", "dir_info": {"editable": true}}'
    files = {**PKG, f"{info}/INSTALLER": b"uv\n", f"{info}/direct_url.json": url}
    env.install("pkg", files)
    record = env.site / info / "RECORD"
    # the same file listed again, with the digest of other bytes, after its right row
    record.write_text(record.read_text() + f"pkg/mod.py,{_field(b'Y = 9')},5\n")
    state, _, _ = env.state()
    (d,) = state.distributions
    assert (d.installer, d.direct_url) == (
        "uv",
        {"url": "file:///src/pkg", "dir_info": {"editable": True}},
    )
    assert env.rows(state)[-2:] == [
        ("pkg/mod.py", OK, _sha(PKG["pkg/mod.py"]), None),
        ("pkg/mod.py", MODIFIED, _sha(PKG["pkg/mod.py"]), "sha256:" + _sha(b"Y = 9")),
    ]


def test_paths_without_a_directory_are_named_whole() -> None:
    # a snapshot read from a file may name a hook or a path file without any directory
    hook = CustomizeModule("sitecustomize", "sitecustomize.py", None, A, "pythonpath", True)
    node = _snap(
        [],
        customize=(hook,),
        path_files=(PathFile("libtw.so.2", B, 1, "unvouched", None, None),),
    )
    assert [
        (f.rule_id, f.severity, f.message) for f in diff_snapshots(_snap([]), node).findings
    ] == [
        (
            "TWA-BASE-008",
            Severity.CRITICAL,
            "new sitecustomize.py since the baseline: sitecustomize.py runs at every interpreter "
            "start",
        ),
        (
            "TWA-BASE-013",
            Severity.CRITICAL,
            "new file on sys.path outside site-packages since the baseline: libtw.so.2",
        ),
    ]
