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
from trainwarden.scan._types import ScanContext, Verdict

__all__ = [
    "HANDLER",
    "JSON_HANDLER",
    "KerasJsonHandler",
    "KerasZipHandler",
    "analyze_keras_config",
    "looks_like_keras_config",
]

#: Packages whose classes come with Keras or its official model libraries (KerasHub, KerasNLP,
#: KerasCV, KerasRS): installed library code, not code from the model file. Their entry points
#: that reach outside the model are still caught by DANGEROUS_KERAS_NAMES.
KERAS_NAMESPACES = (
    "keras",
    "tf_keras",
    "tensorflow.keras",
    "tensorflow.python.keras",
    "keras_hub",
    "keras_nlp",
    "keras_cv",
    "keras_rs",
)

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
        # Keras < 3.9 imports any module named in a config even with safe_mode=True (CVE-2025-1550)
        blocked_by_safe_mode=False,
    )


def _check_object(rep: _Reporter, obj: dict[str, Any], path: str) -> None:
    class_name = obj.get("class_name")
    module = obj.get("module")
    config = obj.get("config")
    registered = obj.get("registered_name")
    if not isinstance(class_name, str):
        return
    carries_lambda_dict = (
        isinstance(config, dict)
        and isinstance(config.get("function"), dict)
        and config["function"].get("class_name") == "__lambda__"
    )
    if (class_name in ("Lambda", "__lambda__") and not carries_lambda_dict) or (
        isinstance(config, dict) and config.get("function_type") == "lambda"
    ):
        rep.add(
            "TWS-KERAS-001",
            Severity.CRITICAL,
            f"config at {path} is a {'Lambda function' if class_name == '__lambda__' else 'Lambda'}"
            " layer: it carries serialised Python code that "
            "runs when the model is loaded (Keras 3 refuses it unless safe_mode=False; Keras 2 "
            "and tf.keras run it)",
            path=path,
            class_name=class_name,
            blocked_by_safe_mode=True,
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


def analyze_keras_config(config: Any, location: str, ctx: ScanContext, *, where: str = "$") -> None:
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
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        EOFError,
        KeyError,
        OverflowError,
        NotImplementedError,  # a "version needed to extract" zipfile does not know
    ):
        return None


def _local_header_names(head: bytes) -> list[str]:
    """Member names from the local headers at the start of an archive (the scanner sniffs only
    the first bytes of a large file, where the central directory is out of reach)."""
    names: list[str] = []
    pos = 0
    while head.startswith(b"PK\x03\x04", pos) and pos + 30 <= len(head):
        flags = int.from_bytes(head[pos + 6 : pos + 8], "little")
        csize = int.from_bytes(head[pos + 18 : pos + 22], "little")
        name_len = int.from_bytes(head[pos + 26 : pos + 28], "little")
        extra_len = int.from_bytes(head[pos + 28 : pos + 30], "little")
        names.append(head[pos + 30 : pos + 30 + name_len].decode("utf-8", "replace"))
        if flags & 0x08:  # sizes follow the data: the next header cannot be located
            break
        pos += 30 + name_len + extra_len + csize
    return names


def _read_config(data: bytes, cap: int) -> tuple[bytes | None, str]:
    """config.json as Keras reads it (``zipfile``: the last entry of that name), or why not."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo(_CONFIG)
            with zf.open(info) as fh:
                raw = fh.read(cap + 1)
    except KeyError:
        return None, "the archive has no config.json"
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        ValueError,
        # zipfile raises these for unsupported compression methods and absurd header sizes
        NotImplementedError,
        OverflowError,
    ) as e:
        return None, f"config.json cannot be read: {type(e).__name__}: {str(e)[:200]}"
    if len(raw) > cap:
        return None, f"config.json is larger than {cap} bytes"
    return raw, ""


class KerasZipHandler:
    """Keras v3 ``.keras`` archives: a zip with ``config.json`` and weights, never a pickle.

    The archive structure and every member go through the scanner's strict ZIP handler (header
    mismatches, CRC, duplicates; members dispatched by content, so ``config.json`` reaches the
    Keras JSON analysis and ``model.weights.h5`` the HDF5 handler). This handler adds what is
    specific to Keras: the ``config.json`` that Keras itself would read is always analysed, even
    when it does not look like a model config.
    """

    name = "keras"

    def sniff(self, data: bytes) -> bool:
        if not data.startswith(b"PK\x03\x04"):
            return False
        names = _zip_names(data)
        if names is None:
            names = _local_header_names(data)
        if _CONFIG not in names:
            return False
        # PyTorch zip checkpoints (``<prefix>/data.pkl``) belong to the torch handler.
        if any(n.endswith(".pkl") for n in names):
            return False
        return _METADATA in names or any(n.startswith("model.weights.") for n in names)

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        from trainwarden.scan._formats import zip as zip_format

        ctx.note_format(self.name)
        try:
            zip_format.HANDLER.scan(data, location, ctx)
        except zlib.error as e:  # a corrupt deflate stream in some member
            ctx.add(
                Finding(
                    "TWS-KERAS-006",
                    Severity.HIGH,
                    f".keras archive has a member that cannot be decompressed: {e}",
                    location,
                )
            )
        member_loc = f"{location}:{_CONFIG}"
        raw, why = _read_config(data, min(ctx.limits.max_decompressed_bytes, _MAX_CONFIG_BYTES))
        if raw is None:
            ctx.add(
                Finding(
                    "TWS-KERAS-006",
                    Severity.HIGH,
                    f".keras archive cannot be inspected: {why}",
                    member_loc,
                )
            )
            return
        if JSON_HANDLER.sniff(raw):
            return  # the ZIP handler dispatched it to the Keras JSON analysis already
        config = parse_config_json(raw, member_loc, ctx, "config.json")
        if config is None:
            return
        if not isinstance(config, dict):
            ctx.add(
                Finding(
                    "TWS-KERAS-006",
                    Severity.HIGH,
                    f"config.json holds a JSON {type(config).__name__}, not a model config",
                    member_loc,
                )
            )
        analyze_keras_config(config, member_loc, ctx)


class KerasJsonHandler:
    """A bare Keras model config (``model.to_json()`` output or a v3 ``config.json``)."""

    name = "keras-json"

    def sniff(self, data: bytes) -> bool:
        head = data[:64].lstrip()
        if not head.startswith(b"{") or len(data) > _MAX_CONFIG_BYTES:
            return False
        if len(data) > 1 << 20 and b'"class_name"' not in data and b"\\u" not in data:
            return False  # a large JSON (tokenizer.json) that cannot name a Keras class
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
