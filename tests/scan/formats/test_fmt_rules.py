"""Every rule id the format handlers can emit is in the rule catalogue and documented."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

from trainwarden.rules import catalogue
from trainwarden.scan._formats import _jinja, gguf, h5, hf_folder, keras, onnx, safetensors

_MODULES: tuple[ModuleType, ...] = (keras, h5, onnx, gguf, safetensors, hf_folder, _jinja)
_ROOT = Path(__file__).resolve().parents[3]
_FAMILIES = ("TWS-KERAS-", "TWS-H5-", "TWS-ONNX-", "TWS-GGUF-", "TWS-TPL-", "TWS-ST-", "TWS-HF-")


def _declared() -> set[str]:
    return {rule for rule in catalogue() if rule.startswith(_FAMILIES)}


def test_every_emitted_rule_is_declared() -> None:
    emitted: set[str] = set()
    for mod in _MODULES:
        assert mod.__file__ is not None
        emitted |= set(re.findall(r'"(TWS-[A-Z0-9]+-\d{3})"', Path(mod.__file__).read_text()))
    assert emitted and emitted <= _declared()


def test_every_rule_is_documented() -> None:
    doc = (_ROOT / "docs" / "scan-formats.md").read_text()
    missing = sorted(r for r in _declared() if f"`{r}`" not in doc)
    assert missing == []
