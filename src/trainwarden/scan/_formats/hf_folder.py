"""Directory hook for Hugging Face model folders: remote-code references and the code they load.

``auto_map`` entries (and ``custom_pipelines``, sentence-transformers module types) make
``from_pretrained(..., trust_remote_code=True)`` import Python from the folder or from another
repository; the ``.py`` files beside the weights are that code. Chat templates in tokenizer configs
get the same SSTI analysis as GGUF templates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainwarden._internal.files import FileTooLargeError, read_limited
from trainwarden.findings import Finding, Severity

__all__ = ["CONFIG_FILES", "folder_findings", "is_hf_folder"]

#: JSON files whose ``auto_map`` transformers resolves (config, tokenizer, processors).
CONFIG_FILES = (
    "config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
    "adapter_config.json",
)
_MARKERS = frozenset(
    {
        *CONFIG_FILES,
        "tokenizer.json",
        "modules.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "adapter_config.json",
    }
)
_MAX_JSON_BYTES = 64 * 1024**2
_MAX_PY_FILES = 1000


def is_hf_folder(directory: Path) -> bool:
    """True when ``directory`` holds a Hugging Face model config or tokenizer file."""
    try:
        return any((directory / name).is_file() for name in _MARKERS)
    except OSError:
        return False


def _load_json(path: Path, out: dict[Path, list[Finding]]) -> Any | None:
    try:
        return json.loads(read_limited(path, _MAX_JSON_BYTES))
    except FileTooLargeError:
        why = f"larger than the {_MAX_JSON_BYTES}-byte limit for model configs"
    except RecursionError:
        why = "nested deeper than the JSON parser's recursion limit"
    except (OSError, ValueError) as e:
        why = str(e)[:200]
    # transformers may still read what we could not (a larger file, deeper nesting, a dialect
    # its parser accepts), and an auto_map there imports code: unanalysable is HIGH.
    out.setdefault(path, []).append(
        Finding(
            "TWS-HF-005",
            Severity.HIGH,
            f"{path.name} cannot be parsed, so its remote-code settings (auto_map, "
            f"trust_remote_code) cannot be checked: {why}",
            str(path),
            {"error": why},
        )
    )
    return None


def _auto_map_refs(value: Any) -> Iterator[tuple[str, str]]:
    """(auto class, "module.Class" reference) pairs of an ``auto_map`` value."""
    if not isinstance(value, dict):
        return
    for auto_cls, ref in value.items():
        refs = ref if isinstance(ref, list) else [ref]
        for r in refs:
            if isinstance(r, str) and r:
                yield str(auto_cls), r


def _module_file(directory: Path, ref: str) -> Path | None:
    """The ``.py`` file inside ``directory`` that a ``module.Class`` reference loads, if local."""
    if "--" in ref:
        return None
    module = ref.rsplit(".", 1)[0]
    candidate = directory / (module.replace(".", "/") + ".py")
    try:
        return candidate if candidate.is_file() else None
    except (OSError, ValueError):  # a reference with a NUL byte or an over-long name
        return None


def _check_auto_map(
    directory: Path,
    path: Path,
    obj: dict[str, Any],
    out: dict[Path, list[Finding]],
    used: set[Path],
) -> None:
    for auto_cls, ref in _auto_map_refs(obj.get("auto_map")):
        repo, _, local = ref.rpartition("--")
        target = _module_file(directory, local)
        if target is not None:
            used.add(target)
        where = (
            f"code from repository {repo!r}"
            if repo
            else (
                f"{target.name} in this folder"
                if target is not None
                else "a module that is missing"
            )
        )
        out.setdefault(path, []).append(
            Finding(
                "TWS-HF-001",
                Severity.HIGH,
                f"{path.name} maps {auto_cls} to remote code {local!r} ({where}): loading it "
                "with trust_remote_code=True runs that Python",
                str(path),
                {"auto_class": auto_cls, "reference": ref, "repository": repo or None},
            )
        )
    pipelines = obj.get("custom_pipelines")
    if isinstance(pipelines, dict):
        for task, spec in pipelines.items():
            impl = spec.get("impl") if isinstance(spec, dict) else None
            if isinstance(impl, str):
                target = _module_file(directory, impl)
                if target is not None:
                    used.add(target)
            out.setdefault(path, []).append(
                Finding(
                    "TWS-HF-003",
                    Severity.HIGH,
                    f"{path.name} declares custom pipeline {task!r} implemented by {impl!r}: "
                    "pipeline() imports it with trust_remote_code=True",
                    str(path),
                    {"task": str(task), "impl": impl},
                )
            )
    peft = obj.get("auto_mapping")
    if isinstance(peft, dict):
        # PEFT imports ``parent_library`` and takes ``base_model_class`` from it.
        lib, cls = peft.get("parent_library"), peft.get("base_model_class")
        out.setdefault(path, []).append(
            Finding(
                "TWS-HF-001",
                Severity.HIGH,
                f"{path.name} auto_mapping makes PEFT import {lib!r} and use {cls!r} from it",
                str(path),
                {"reference": f"{lib}.{cls}", "repository": None},
            )
        )
    if obj.get("trust_remote_code") is True:
        out.setdefault(path, []).append(
            Finding(
                "TWS-HF-004",
                Severity.MEDIUM,
                f"{path.name} sets trust_remote_code=true",
                str(path),
            )
        )


def _check_templates(path: Path, obj: dict[str, Any], out: dict[Path, list[Finding]]) -> None:
    template = obj.get("chat_template")
    named: list[tuple[str, str]] = []
    if isinstance(template, str):
        named.append(("chat_template", template))
    elif isinstance(template, list):
        for item in template:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                named.append((f"chat_template.{item.get('name', '?')}", item["template"]))
    _template_findings(path, named, out)


def _template_findings(
    path: Path, named: list[tuple[str, str]], out: dict[Path, list[Finding]]
) -> None:
    from trainwarden.scan._formats import _jinja  # on first template: it compiles its tables

    for key, text in named:
        for issue in _jinja.analyze_template(text):
            out.setdefault(path, []).append(
                Finding(
                    _jinja.rule_for(issue),
                    issue.severity,
                    f"{path.name} {key}: {issue.message}",
                    str(path),
                    {"key": key, **issue.evidence},
                )
            )


def _check_modules_json(path: Path, obj: Any, out: dict[Path, list[Finding]]) -> None:
    # sentence-transformers imports each module's "type" by dotted path.
    if not isinstance(obj, list):
        return
    for entry in obj:
        kind = entry.get("type") if isinstance(entry, dict) else None
        if isinstance(kind, str) and not (
            kind.startswith("sentence_transformers.") or kind.startswith("transformers.")
        ):
            out.setdefault(path, []).append(
                Finding(
                    "TWS-HF-001",
                    Severity.HIGH,
                    f"modules.json loads module type {kind!r}, which sentence-transformers "
                    "imports as code",
                    str(path),
                    {"reference": kind},
                )
            )


def _python_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for p in sorted(directory.glob("*.py")):
        if len(found) >= _MAX_PY_FILES:
            break
        if p.is_file():
            found.append(p)
    return found


def folder_findings(directory: Path) -> dict[Path, list[Finding]]:
    """Findings about a Hugging Face model folder, keyed by the file they concern.

    Returns ``{}`` for a directory that is not a model folder (no config, tokenizer or weights
    file), so the scanner can call it on every directory it walks.
    """
    directory = Path(directory)
    if not is_hf_folder(directory):
        return {}
    out: dict[Path, list[Finding]] = {}
    used: set[Path] = set()
    for name in CONFIG_FILES:
        path = directory / name
        if not path.is_file():
            continue
        obj = _load_json(path, out)
        if isinstance(obj, dict):
            _check_auto_map(directory, path, obj, out, used)
            if name in ("tokenizer_config.json", "processor_config.json"):
                _check_templates(path, obj, out)
    for tpl in sorted(directory.glob("*.jinja")):
        try:
            text = tpl.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            out.setdefault(tpl, []).append(
                Finding(
                    "TWS-TPL-004",
                    Severity.HIGH,
                    f"{tpl.name} cannot be read as a UTF-8 template: {str(e)[:200]}",
                    str(tpl),
                )
            )
            continue
        _template_findings(tpl, [("template", text)], out)
    chat_json = directory / "chat_template.json"  # processors keep their template here
    if chat_json.is_file():
        obj = _load_json(chat_json, out)
        if isinstance(obj, dict):
            _check_templates(chat_json, obj, out)
    modules = directory / "modules.json"
    if modules.is_file():
        obj = _load_json(modules, out)
        _check_modules_json(modules, obj, out)
    custom_generate = directory / "custom_generate"
    generate_code = _python_files(custom_generate) if custom_generate.is_dir() else []
    # transformers' generate(custom_generate=...) imports custom_generate/generate.py
    used.update(p for p in generate_code if p.name == "generate.py")
    files = _python_files(directory) + generate_code
    # auto_map modules in sub-packages ("sub.modeling_x.Model") are code too
    files += sorted(p for p in used if p not in files)
    for py in files:
        referenced = py in used
        out.setdefault(py, []).append(
            Finding(
                "TWS-HF-002",
                Severity.HIGH if referenced else Severity.MEDIUM,
                f"model folder ships Python code {py.relative_to(directory)}"
                + (
                    ", loaded by auto_map/custom_generate with trust_remote_code=True"
                    if referenced
                    else " (runs if remote code imports it)"
                ),
                str(py),
                {"referenced_by_auto_map": referenced},
            )
        )
    return out
