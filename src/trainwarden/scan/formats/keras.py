"""Keras handlers: the v3 ``.keras`` zip archive and legacy Keras JSON model configs.

A Keras config is a program: Lambda layers carry marshalled Python bytecode, and every
``module``/``class_name``/function reference is imported when the model is deserialised (arbitrary
code on load, e.g. CVE-2024-3660 and the ``safe_mode`` bypass CVE-2025-1550). The config analysis
here is shared with the HDF5 handler, which finds the same JSON in a ``model_config`` attribute.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan.types import ScanContext, Verdict

__all__ = [
    "HANDLER",
    "JSON_HANDLER",
    "KerasJsonHandler",
    "KerasZipHandler",
    "analyze_keras_config",
    "looks_like_keras_config",
]

#: Top-level packages whose classes Keras itself provides (resolved from its own registry).
KERAS_NAMESPACES = ("keras", "tf_keras", "tensorflow.keras", "tensorflow.python.keras")

#: Keras built-ins that defeat ``safe_mode`` or reach outside the model when deserialised.
DANGEROUS_KERAS_NAMES: dict[str, str] = {
    "enable_unsafe_deserialization": "turns off safe_mode during loading (CVE-2025-9906)",
    "get_file": "downloads/writes arbitrary files while loading (CVE-2025-8747)",
    "TFSMLayer": "loads an external TensorFlow SavedModel graph named by a path in the config",
    "TorchModuleWrapper": "restores a torch module with torch.load, i.e. an embedded pickle",
    "load_model": "loads another model file named in the config",
    "load_weights": "loads another weights file named in the config",
    "deserialize_keras_object": "re-enters deserialisation with attacker-chosen config",
    "exec": "executes Python source",
    "eval": "evaluates Python source",
}

#: Preprocessing layers that read their vocabulary from a file when given a path string.
_FILE_VOCAB_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})
_MAX_CONFIG_BYTES = 256 * 1024**2
_MAX_REPORTED = 20
_CONFIG = "config.json"
_METADATA = "metadata.json"


def _in_keras_namespace(module: str) -> bool:
    return any(module == ns or module.startswith(ns + ".") for ns in KERAS_NAMESPACES)


def looks_like_keras_config(obj: Any) -> bool:
    """True for a JSON object shaped like a serialised Keras model or layer."""
    return isinstance(obj, dict) and isinstance(obj.get("class_name"), str) and "config" in obj


class _Reporter:
    def __init__(self, location: str, ctx: ScanContext) -> None:
        self.location = location
        self.ctx = ctx
        self.counts: dict[str, int] = {}

    def add(self, rule: str, severity: Severity, message: str, **evidence: Any) -> None:
        n = self.counts.get(rule, 0)
        self.counts[rule] = n + 1
        if n < _MAX_REPORTED:
            self.ctx.add(Finding(rule, severity, message, self.location, evidence))


def _reference(rep: _Reporter, module: str, name: str, path: str, kind: str) -> None:
    """Report one ``module``/``name`` reference found at JSON ``path``."""
    short = name.rsplit(".", 1)[-1]
    if short in DANGEROUS_KERAS_NAMES:
        rep.add(
            "TWS-KERAS-003",
            Severity.CRITICAL,
            f"config at {path} references {module}.{name}, which {DANGEROUS_KERAS_NAMES[short]}",
            module=module,
            name=name,
            path=path,
        )
        return
    if _in_keras_namespace(module):
        return
    verdict, reason = rep.ctx.classify(module, name)
    if verdict is Verdict.SAFE:
        return
    severity = Severity.CRITICAL if verdict is Verdict.DANGEROUS else Severity.HIGH
    rep.add(
        "TWS-KERAS-002",
        severity,
        f"config at {path} references {kind} {module}.{name} outside Keras: loading the model "
        f"imports it ({verdict.value}: {reason})",
        module=module,
        name=name,
        path=path,
        verdict=verdict.value,
    )


def _check_object(rep: _Reporter, obj: dict[str, Any], path: str) -> None:
    class_name = obj.get("class_name")
    module = obj.get("module")
    config = obj.get("config")
    registered = obj.get("registered_name")
    if not isinstance(class_name, str):
        return
    if class_name in ("Lambda", "__lambda__") or (
        isinstance(config, dict) and config.get("function_type") == "lambda"
    ):
        rep.add(
            "TWS-KERAS-001",
            Severity.CRITICAL,
            f"config at {path} is a {class_name} layer: it carries serialised Python code that "
            "runs when the model is loaded (requires safe_mode=False)",
            path=path,
            class_name=class_name,
        )
    if class_name == "function" and isinstance(module, str) and isinstance(config, str):
        _reference(rep, module, config, path, "function")
    elif isinstance(module, str) and module:
        _reference(rep, module, class_name, path, "class")
    elif class_name in DANGEROUS_KERAS_NAMES:
        _reference(rep, "keras", class_name, path, "class")
    if isinstance(config, dict):
        # Legacy (Keras 2) Lambda with function_type "raw": a named function in a module.
        fn = config.get("function")
        fn_module = config.get("module")
        if (
            config.get("function_type") == "raw"
            and isinstance(fn, str)
            and isinstance(fn_module, str)
        ):
            _reference(rep, fn_module, fn, f"{path}.config.function", "function")
        if class_name in _FILE_VOCAB_LAYERS and isinstance(config.get("vocabulary"), str):
            rep.add(
                "TWS-KERAS-005",
                Severity.HIGH,
                f"config at {path} makes {class_name} read its vocabulary from the file "
                f"{config['vocabulary'][:200]!r} (arbitrary file read on load)",
                path=path,
                vocabulary=config["vocabulary"][:500],
            )
    if isinstance(registered, str) and ">" in registered:
        package = registered.split(">", 1)[0]
        if not _in_keras_namespace(package):
            rep.add(
                "TWS-KERAS-004",
                Severity.MEDIUM,
                f"config at {path} needs the custom registered object {registered!r}: its code "
                "comes from outside the model and runs on load",
                path=path,
                registered_name=registered,
            )


def analyze_keras_config(
    config: Any, location: str, ctx: ScanContext, *, where: str = "config"
) -> None:
    """Report every risky construct in a parsed Keras model/layer config (any nesting)."""
    rep = _Reporter(location, ctx)
    max_depth = ctx.limits.max_nesting
    stack: list[tuple[Any, str, int]] = [(config, where, 0)]
    while stack:
        obj, path, depth = stack.pop()
        if depth > max_depth:
            rep.add(
                "TWS-KERAS-006",
                Severity.HIGH,
                f"config nests deeper than the {max_depth}-level limit at {path}",
                path=path,
            )
            continue
        if isinstance(obj, dict):
            _check_object(rep, obj, path)
            for k, v in obj.items():
                if isinstance(v, (dict, list)):
                    stack.append((v, f"{path}.{k}", depth + 1))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                if isinstance(v, (dict, list)):
                    stack.append((v, f"{path}[{i}]", depth + 1))


def parse_config_json(raw: bytes | str, location: str, ctx: ScanContext, what: str) -> Any | None:
    """Parse JSON text; on failure add a fail-closed TWS-KERAS-006 finding and return None."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        ctx.add(
            Finding(
                "TWS-KERAS-006",
                Severity.HIGH,
                f"{what} is not valid JSON, so the Keras config cannot be inspected: "
                f"{str(e)[:200]}",
                location,
            )
        )
        return None


def _zip_names(data: bytes) -> list[str] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, OverflowError):
        return None


class KerasZipHandler:
    """Keras v3 ``.keras`` archives: a zip with ``config.json`` and weights, never a pickle."""

    name = "keras"

    def sniff(self, data: bytes) -> bool:
        if not data.startswith(b"PK\x03\x04"):
            return False
        names = _zip_names(data)
        if names is None or _CONFIG not in names:
            return False
        # PyTorch zip checkpoints (``<prefix>/data.pkl``) belong to the torch handler.
        if any(n.endswith(".pkl") for n in names):
            return False
        return _METADATA in names or any(n.startswith("model.weights.") for n in names)

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        limits = ctx.limits
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                infos = zf.infolist()
                if len(infos) > limits.max_members:
                    ctx.add(
                        Finding(
                            "TWS-KERAS-006",
                            Severity.HIGH,
                            f".keras archive has {len(infos)} members, over the "
                            f"{limits.max_members}-member limit; the rest were not inspected",
                            location,
                        )
                    )
                    infos = infos[: limits.max_members]
                budget = limits.max_decompressed_bytes
                seen_config = False
                for info in infos:
                    if info.is_dir():
                        continue
                    cap = (
                        min(budget, _MAX_CONFIG_BYTES)
                        if info.filename
                        in (
                            _CONFIG,
                            _METADATA,
                        )
                        else budget
                    )
                    with zf.open(info) as fh:
                        raw = fh.read(cap + 1)
                    if len(raw) > cap:
                        ctx.add(
                            Finding(
                                "TWS-KERAS-006",
                                Severity.HIGH,
                                f"member {info.filename!r} decompresses past the scan limit "
                                "and was not inspected",
                                f"{location}:{info.filename}",
                            )
                        )
                        return
                    budget -= len(raw)
                    member_loc = f"{location}:{info.filename}"
                    if info.filename == _CONFIG:
                        seen_config = True
                        config = parse_config_json(raw, member_loc, ctx, "config.json")
                        if config is not None:
                            analyze_keras_config(config, member_loc, ctx)
                    elif info.filename == _METADATA:
                        parse_config_json(raw, member_loc, ctx, "metadata.json")
                    else:
                        ctx.scan_member(raw, member_loc)
                if not seen_config:
                    ctx.add(
                        Finding(
                            "TWS-KERAS-006",
                            Severity.HIGH,
                            ".keras archive has no readable config.json",
                            location,
                        )
                    )
        except (
            zipfile.BadZipFile,
            zlib.error,
            OSError,
            EOFError,
            ValueError,
            KeyError,
            NotImplementedError,
            OverflowError,
        ) as e:
            ctx.add(
                Finding(
                    "TWS-KERAS-006",
                    Severity.HIGH,
                    f".keras archive cannot be read: {type(e).__name__}: {str(e)[:200]}",
                    location,
                )
            )


class KerasJsonHandler:
    """A bare Keras model config (``model.to_json()`` output or a v3 ``config.json``)."""

    name = "keras-json"

    def sniff(self, data: bytes) -> bool:
        head = data[:64].lstrip()
        if not head.startswith(b"{") or len(data) > _MAX_CONFIG_BYTES:
            return False
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return False
        return looks_like_keras_config(obj)

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        config = parse_config_json(data, location, ctx, "Keras JSON config")
        if config is not None:
            analyze_keras_config(config, location, ctx)


HANDLER = KerasZipHandler()
JSON_HANDLER = KerasJsonHandler()
