"""The T2 drill's probe sees an edit however quickly it follows the first probe.

Python decides whether bytecode is current from the source's size and mtime in whole seconds. A
same-size edit (a flipped sign) made within the second the file was written would leave the
first probe's bytecode looking current, and the second probe would run the old code; the drill
would then call a working edit ineffective. The edit's mtime is pinned to the original's here,
so the test does not depend on how fast the machine is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainwarden.drill import _framework_edit as fe


@pytest.mark.parametrize("name", sorted(fe.EDITS))
def test_an_edit_in_the_same_second_changes_what_the_probe_computes(
    name: str, tmp_path: Path
) -> None:
    edit = fe.EDITS[name]
    python = fe.make_env(tmp_path / "env")
    before = fe.probe(python)
    source = fe._site_packages(tmp_path / "env") / fe.PACKAGE / edit.module
    st = source.stat()
    fe.apply_edit(tmp_path / "env", edit)
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if within the same second
    after = fe.probe(python)
    assert before[edit.probe_key] != after[edit.probe_key]
    assert not list(source.parent.glob("__pycache__/*.pyc"))  # the probe writes no bytecode
