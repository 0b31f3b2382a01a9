"""The snapshot memo's decisions on their own: what changes the fingerprint, when stored results
are refused, and when the memo file is not trusted (fast: no interpreter is attested)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainwarden.attest._cache import HashCache, cache_key_packer
from trainwarden.attest._memo import SnapshotMemo, lstat_keys, walk_fingerprint


def _st(
    dev: int = 1, ino: int = 2, size: int = 3, mtime: int = 4, ctime: int = 5
) -> os.stat_result:
    # st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size, integer times, float times,
    # then st_atime_ns, st_mtime_ns, st_ctime_ns.
    fields = [0o100644, ino, dev, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime, ctime]
    return os.stat_result(fields)


def test_the_stat_helper_builds_what_the_fingerprint_reads() -> None:
    st = _st(dev=11, ino=12, size=13, mtime=14, ctime=15)
    assert (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (
        11,
        12,
        13,
        14,
        15,
    )


@pytest.mark.parametrize("field", ["dev", "ino", "size", "mtime", "ctime"])
def test_every_metadata_field_changes_the_fingerprint(field: str) -> None:
    base = walk_fingerprint([b"p"], {"/a": _st(), "/b": _st(ino=9)})
    changed = walk_fingerprint([b"p"], {"/a": _st(**{field: 99}), "/b": _st(ino=9)})
    assert base != changed


def test_paths_order_parts_and_walk_boundaries_change_the_fingerprint() -> None:
    st = _st()
    base = walk_fingerprint([b"ab", b"c"], {"/a": st, "/b": st})
    assert base == walk_fingerprint([b"ab", b"c"], {"/a": st, "/b": st})
    assert base != walk_fingerprint([b"ab", b"c"], {"/a": st, "/c": st})
    assert base != walk_fingerprint([b"ab", b"c"], {"/b": st, "/a": st})
    assert base != walk_fingerprint([b"a", b"bc"], {"/a": st, "/b": st})
    assert base != walk_fingerprint([b"ab", b"c"], {"/a": st}, {"/b": st})
    assert base != walk_fingerprint([b"ab", b"c"], {"/a": st, "/b": st}, {})
    # A path that absorbs its neighbour's name is not the same walk.
    assert walk_fingerprint([], {"/a\0/b": st}) != walk_fingerprint([], {"/a": st, "/b": st})


def test_lstat_keys_are_the_cache_keys_and_empty_for_a_missing_path(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    s = os.lstat(f)
    key = cache_key_packer()(s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
    assert lstat_keys([str(f), str(tmp_path / "none")]) == (
        (str(f), key),
        (str(tmp_path / "none"), b""),
    )


def _memo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "m"
    d.mkdir(mode=0o700)
    return d / "h.bin.memo"


def test_stored_results_come_back_only_for_the_same_slot_and_fingerprint(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    memo = SnapshotMemo(path)
    memo.put(b"slot", b"fp", (), ("results", 1))
    memo.save()
    again = SnapshotMemo(path)
    assert again.get(b"other", b"fp") is None
    assert again.get(b"slot", b"fp2") is None
    assert again.hit is False
    assert again.get(b"slot", b"fp") == ("results", 1)
    assert again.hit is True


def test_a_file_read_outside_the_walk_that_changed_refuses_the_results(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    script = tmp_path / "script"
    script.write_text("a")
    absent = tmp_path / "absent"
    memo = SnapshotMemo(path)
    memo.put(b"s", b"f", lstat_keys([str(script), str(absent)]), "ok")
    assert memo.get(b"s", b"f") == "ok"
    script.write_text("b")
    assert memo.get(b"s", b"f") is None
    memo.put(b"s", b"f", lstat_keys([str(script), str(absent)]), "ok")
    absent.write_text("now here")
    assert memo.get(b"s", b"f") is None


def test_only_the_last_eight_slots_are_kept_and_a_put_replaces_its_slot(tmp_path: Path) -> None:
    memo = SnapshotMemo(_memo_dir(tmp_path))
    for i in range(9):
        memo.put(bytes([i]), b"f", (), i)
    assert memo.get(bytes([0]), b"f") is None
    assert [memo.get(bytes([i]), b"f") for i in range(1, 9)] == list(range(1, 9))
    memo.put(bytes([1]), b"g", (), "new")
    memo.put(bytes([9]), b"f", (), 9)
    # Slot 1 was written again, so it is the newest and slot 2 is now the oldest.
    assert memo.get(bytes([1]), b"g") == "new"
    assert memo.get(bytes([2]), b"f") is None


def test_a_memo_others_can_write_is_never_read_nor_written(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    memo = SnapshotMemo(path)
    memo.put(b"s", b"f", (), "poison")
    memo.save()
    path.chmod(0o620)
    untrusted = SnapshotMemo(path)
    assert untrusted.path is None
    assert untrusted.get(b"s", b"f") is None
    path.chmod(0o600)
    path.parent.chmod(0o770)
    assert SnapshotMemo(path).get(b"s", b"f") is None
    path.parent.chmod(0o700)
    assert SnapshotMemo(path).get(b"s", b"f") == "poison"


def test_a_file_that_is_not_a_memo_is_empty_and_replaced(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    path.write_bytes(b"TWMEMO2\n\xff\xfe garbage")
    memo = SnapshotMemo(path)
    assert memo.get(b"s", b"f") is None
    memo.put(b"s", b"f", (), "fresh")
    memo.save()
    assert SnapshotMemo(path).get(b"s", b"f") == "fresh"
    path.write_bytes(b"not a memo at all")
    assert SnapshotMemo(path).get(b"s", b"f") is None


def test_save_writes_only_when_something_was_stored(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    SnapshotMemo(path).save()
    assert not path.exists()
    memo = SnapshotMemo(path)
    memo.put(b"s", b"f", (), 1)
    memo.save()
    before = path.stat().st_mtime_ns, path.stat().st_ino
    memo.save()
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_the_memo_lives_beside_a_trusted_cache_file_only(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir(mode=0o700)
    assert SnapshotMemo.beside(HashCache(d / "h.bin")).path == d / "h.bin.memo"
    assert SnapshotMemo.beside(HashCache(None)).path is None
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "h.bin").write_bytes(b"TWHC4\n")
    assert SnapshotMemo.beside(HashCache(shared / "h.bin")).path is None


def test_a_path_that_cannot_be_read_does_not_hide_the_paths_after_it(tmp_path: Path) -> None:
    after = tmp_path / "after"
    after.write_text("x")
    keys = lstat_keys([str(tmp_path / "missing"), str(after)])
    assert [p for p, _ in keys] == [str(tmp_path / "missing"), str(after)]
    assert keys[1][1] != b""


def test_a_path_that_is_not_utf8_is_fingerprinted(tmp_path: Path) -> None:
    # os.fsdecode of a Latin-1 file name gives a lone surrogate.
    name = os.fsdecode(b"/site/caf\xe9.py")
    assert walk_fingerprint([], {name: _st()}) != walk_fingerprint([], {"/site/cafe.py": _st()})


def test_a_memo_path_that_is_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    real = path.with_name("elsewhere.memo")
    memo = SnapshotMemo(real)
    memo.put(b"s", b"f", (), "planted")
    memo.save()
    path.symlink_to(real)
    assert SnapshotMemo(path).get(b"s", b"f") is None


def test_save_creates_missing_directories_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "h.bin.memo"
    memo = SnapshotMemo(path)
    memo.put(b"s", b"f", (), 1)
    memo.save()
    assert SnapshotMemo(path).get(b"s", b"f") == 1
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)


def test_a_memo_that_cannot_be_written_is_skipped_without_leftovers(tmp_path: Path) -> None:
    path = _memo_dir(tmp_path)
    memo = SnapshotMemo(path)
    memo.put(b"s", b"f", (), object())  # marshal refuses it: not stored, nothing to write
    memo.save()
    assert os.listdir(path.parent) == []
    memo.put(b"s", b"f", (), 1)
    memo._slots[b"t"] = (b"f", (), object())  # type: ignore[assignment]  # the write fails half-way
    memo.save()
    assert os.listdir(path.parent) == []
    assert SnapshotMemo(path).get(b"s", b"f") is None


def test_a_slot_whose_results_cannot_be_unpacked_is_a_miss(tmp_path: Path) -> None:
    """Each slot's results are a blob of their own, read only on a match; a broken blob in the
    matching slot is a miss (computed again), never an error, and other slots stay usable."""
    path = _memo_dir(tmp_path)
    memo = SnapshotMemo(path)
    memo.put(b"good", b"f", (), ("results", 1))
    memo.put(b"bad", b"f", (), ("results", 2))
    fingerprint, outside, blob = memo._slots[b"bad"]
    memo._slots[b"bad"] = (fingerprint, outside, blob[:-3])
    memo.save()
    again = SnapshotMemo(path)
    assert again.get(b"bad", b"f") is None and again.hit is False
    assert again.get(b"good", b"f") == ("results", 1) and again.hit is True
