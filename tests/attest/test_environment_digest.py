"""The environment digest (the in-toto subject nodes compare) is what docs/attest.md says it is,
and a snapshot never reports a digest computed for another snapshot's content."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

from trainwarden.attest._cache import HashCache
from trainwarden.attest._record import FileStatus
from trainwarden.attest._snapshot import Snapshot, take_snapshot
from trainwarden.attest._verify import verify_environment

from .venvs import Venv

_CORE = ("distributions", "orphans", "pth_files", "customize", "path_files", "shadows")


def _by_definition(snap: Snapshot) -> str:
    """The digest's definition, from the predicate: its file-level parts and the loader
    environment, without the per-distribution summaries, as canonical (sorted-key) JSON."""
    p = snap.predicate()
    core = {k: p[k] for k in _CORE}
    core["environment"] = p["environment"]
    for d in core["distributions"]:
        del d["summary"]
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def _snap(make_venv: Callable[[], Venv], env: dict[str, str]) -> Snapshot:
    return take_snapshot(str(make_venv().python), environ=env, cache=HashCache(None))


def test_digest_is_the_canonical_json_of_the_file_level_parts(
    make_venv: Callable[[], Venv], clean_env: dict[str, str]
) -> None:
    snap = _snap(make_venv, clean_env)
    assert sum(len(d.files) for d in snap.distributions) > 0
    assert snap.environment_digest() == _by_definition(snap)
    # Asked again (the second answer is the remembered one): the same.
    assert snap.environment_digest() == _by_definition(snap)
    statement = snap.to_statement()
    env_subject = [s for s in statement["subject"] if s["name"].startswith("environment:")]
    assert env_subject == [
        {
            "name": f"environment:{snap.interpreter.prefix}",
            "digest": {"sha256": _by_definition(snap)},
        }
    ]
    # The predicate still carries each distribution's summary (only the digest leaves it out).
    assert all("summary" in d for d in statement["predicate"]["distributions"])


def test_a_changed_copy_never_reports_the_digest_of_the_original(
    make_venv: Callable[[], Venv], clean_env: dict[str, str]
) -> None:
    snap = _snap(make_venv, clean_env)
    before = snap.environment_digest()  # computed and remembered on the original
    dist = next(d for d in snap.distributions if d.files)
    first = dist.files[0]
    flipped = FileStatus.MODIFIED if first.status is not FileStatus.MODIFIED else FileStatus.OK
    edited_dist = dataclasses.replace(dist, files=(first._replace(status=flipped), *dist.files[1:]))
    edited = dataclasses.replace(
        snap,
        distributions=tuple(edited_dist if d is dist else d for d in snap.distributions),
    )
    assert edited.environment_digest() == _by_definition(edited)
    assert edited.environment_digest() != before
    assert snap.environment_digest() == before


def test_the_report_names_the_same_subjects_as_the_statement(
    make_venv: Callable[[], Venv], clean_env: dict[str, str]
) -> None:
    venv = make_venv()
    report = verify_environment(str(venv.python), environ=clean_env, cache=HashCache(None))
    assert report.to_dict()["subject"] == report.snapshot.to_statement()["subject"]
    assert report.to_dict()["subject"][1]["digest"]["sha256"] == _by_definition(report.snapshot)
