"""What a scan report says about hostile file names, skipped entries and scans of nothing.

Names come from whoever wrote the files: they must not forge report lines (text), break strict
JSON parsers (non-UTF-8 names) or SARIF URIs, and a scan that analysed nothing is no pass.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import urllib.parse
from pathlib import Path

import pytest

from trainwarden.cli import main

# GLOBAL os.system + REDUCE: flagged by the scanner, never loaded by these tests.
EVIL = b"cos\nsystem\n(S'true'\ntR."


def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = int(e.code or 0)
            else:
                code = 0
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


def test_newline_in_a_name_cannot_forge_a_report_line(tmp_path: Path) -> None:
    (tmp_path / "x\nCLEAN    innocent.pt").write_bytes(EVIL)
    code, out, _ = cli("scan", str(tmp_path))
    assert code == 1
    assert not any(line.startswith("CLEAN") for line in out.splitlines())
    assert "x\\x0aCLEAN    innocent.pt" in out


def test_bidi_override_and_markup_in_a_name_are_shown_inert(tmp_path: Path) -> None:
    (tmp_path / "\u202egnp.pt").write_bytes(EVIL)
    (tmp_path / "[bold red]ok.pt").write_bytes(EVIL)
    code, out, _ = cli("scan", str(tmp_path))
    assert code == 1
    assert "\u202e" not in out and "\\u202egnp.pt" in out
    assert "[bold red]ok.pt" in out


def test_non_utf8_name_is_strict_json_and_reversible(tmp_path: Path) -> None:
    name = os.fsdecode(b"model-\xff\xfe.pt")
    (tmp_path / name).write_bytes(EVIL)
    code, out, _ = cli("scan", "--format", "json", str(tmp_path))
    assert code == 1
    out.encode("utf-8")  # no lone surrogate escapes survive into the document
    doc = json.loads(out)
    (entry,) = doc["files"]
    assert base64.b64decode(entry["path_b64"]) == os.fsencode(str(tmp_path / name))
    assert "\\ud" not in out.lower()


def test_sarif_uris_are_percent_encoded_from_the_name_bytes(tmp_path: Path) -> None:
    name = os.fsdecode(b"a b#c?\n\xff.pt")
    (tmp_path / name).write_bytes(EVIL)
    code, out, _ = cli("scan", "--format", "sarif", name, cwd=tmp_path)
    assert code == 1
    doc = json.loads(out)
    uris = {
        loc["physicalLocation"]["artifactLocation"]["uri"]
        for r in doc["runs"][0]["results"]
        for loc in r["locations"]
    }
    (uri,) = uris
    assert uri == "a%20b%23c%3F%0A%FF.pt"
    assert urllib.parse.unquote_to_bytes(uri) == os.fsencode(name)


def _tree_with_skips(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "real").mkdir(parents=True)
    (root / "real" / "m.pkl").write_bytes(EVIL)
    (root / "link").symlink_to("real", target_is_directory=True)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(root / "pipe")
    return root


def test_skipped_entries_are_listed_in_every_format(tmp_path: Path) -> None:
    root = _tree_with_skips(tmp_path)
    expect = {
        str(root / "link"): "symlink to a directory, not followed",
        str(root / "dangling"): "cannot stat",
        str(root / "pipe"): "not a regular file (a named pipe (FIFO))",
    }
    code, text, _ = cli("scan", str(root))
    for path, reason in expect.items():
        assert any(path in line and reason in line for line in text.splitlines()), path
    assert "3 skipped" in text
    # each is also a HIGH finding on its own entry, not counted among the files scanned
    assert code == 1
    assert "1 file(s) scanned" in text and "4 unsafe" in text
    assert text.count("TWS-UNSCANNED") == 3
    _, js, _ = cli("scan", "--format", "json", str(root))
    skipped = {e["path"]: e["reason"] for e in json.loads(js)["skipped"]}
    assert set(skipped) == set(expect)
    assert all(expect[p] in skipped[p] for p in expect)
    _, sarif, _ = cli("scan", "--format", "sarif", str(root))
    notes = json.loads(sarif)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    uris = {n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in notes}
    assert uris == {Path(p).as_uri() for p in expect}


@pytest.mark.parametrize("fmt", ["text", "json", "sarif"])
def test_scan_of_nothing_exits_2_unless_allowed(tmp_path: Path, fmt: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    behind_link = tmp_path / "behind"
    behind_link.mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pkl").write_bytes(EVIL)
    (behind_link / "models").symlink_to(tmp_path / "models", target_is_directory=True)
    code, _, err = cli("scan", "--format", fmt, str(empty))
    assert code == 2
    assert "nothing was analysed" in err
    code, _, _ = cli("scan", "--format", fmt, "--allow-empty", str(empty))
    assert code == 0
    # a folder holding only a link to a directory: what is behind the link was not scanned,
    # which is a finding (HIGH), not an empty scan that --allow-empty could accept
    for extra in ((), ("--allow-empty",)):
        code, out, _ = cli("scan", "--format", fmt, *extra, str(behind_link))
        assert code == 1
        assert "TWS-UNSCANNED" in out
    code, _, err = cli("scan", "--format", fmt, "")
    assert code == 2
    assert "an empty path" in err


def test_text_lists_findings_and_summary_by_default_every_file_with_verbose(
    tmp_path: Path,
) -> None:
    import numpy as np

    for i in range(5):
        np.save(tmp_path / f"clean{i}.npy", np.arange(4, dtype=np.float32))
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    code, out, _ = cli("scan", str(tmp_path))
    assert code == 1
    assert "evil.pkl" in out and "clean0.npy" not in out
    assert "6 file(s) scanned" in out and "5 file(s) without findings not listed" in out
    code, out, _ = cli("scan", "--verbose", str(tmp_path))
    assert all(f"clean{i}.npy" in out for i in range(5))


def test_every_report_names_the_policy_in_use(tmp_path: Path) -> None:
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    policy = tmp_path / "trainwarden.toml"
    policy.write_text('fail_on = "high"\n')
    _, text, _ = cli("scan", "--policy", str(policy), str(tmp_path / "evil.pkl"))
    assert f"policy: {policy}" in text
    _, js, _ = cli("scan", "--format", "json", "--policy", str(policy), str(tmp_path / "evil.pkl"))
    assert json.loads(js)["summary"]["policy"] == str(policy)
    _, sarif, _ = cli(
        "scan", "--format", "sarif", "--policy", str(policy), str(tmp_path / "evil.pkl")
    )
    assert json.loads(sarif)["runs"][0]["properties"]["policy"] == str(policy)
    _, text, _ = cli("scan", str(tmp_path / "evil.pkl"), cwd=tmp_path.parent)
    assert "policy: " in text
