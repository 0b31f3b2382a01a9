"""HDF5 handler for legacy Keras ``.h5`` models: inspects their ``model_config`` JSON.

Keras deserialises the ``model_config``/``training_config`` root attributes on ``load_model``
(Lambda bytecode, custom objects), so they get the same analysis as a ``.keras`` config. h5py is
optional: without it (or when it cannot open the bytes) the JSON is recovered by scanning the raw
bytes, and a config that cannot be recovered is a fail-closed finding.
"""

from __future__ import annotations

import io
import json
from typing import Any

from trainwarden.findings import Finding, Severity
from trainwarden.scan.formats.keras import analyze_keras_config
from trainwarden.scan.types import ScanContext

__all__ = ["CONFIG_ATTRS", "HANDLER", "H5Handler", "extract_configs_from_bytes"]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Root attributes that Keras turns back into objects when loading an HDF5 model.
CONFIG_ATTRS = ("model_config", "training_config")
_MAX_USERBLOCK_PROBES = 16  # the superblock sits at 0, 512, 1024, 2048, ... (userblock sizes)


def _superblock_offset(data: bytes) -> int | None:
    offset = 0
    for _ in range(_MAX_USERBLOCK_PROBES):
        if offset + len(SIGNATURE) > len(data):
            return None
        if data[offset : offset + len(SIGNATURE)] == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _read_with_h5py(data: bytes) -> dict[str, str] | None:
    """Root config attributes via h5py; None when h5py is missing or cannot open the bytes."""
    try:
        import h5py  # type: ignore[import-untyped]  # optional: only when an HDF5 file is seen
    except ImportError:
        return None
    out: dict[str, str] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            for name in CONFIG_ATTRS:
                if name in f.attrs:
                    value: Any = f.attrs[name]
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", errors="replace")
                    out[name] = str(value)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        del e
        return None
    return out


def extract_configs_from_bytes(data: bytes) -> tuple[list[Any], bool]:
    """Recover Keras JSON configs stored as HDF5 attributes by scanning the raw bytes.

    Returns the parsed configs and whether any config attribute *name* occurs in the file (an
    attribute whose name is absent cannot exist, so no name means nothing for Keras to load).
    HDF5 stores small attribute values contiguously, so each ``{"class_name"`` / ``{"module"`` start
    is tried with a JSON decoder.
    """
    named = any(name.encode() in data for name in CONFIG_ATTRS)
    if not named:
        return [], False
    decoder = json.JSONDecoder()
    configs: list[Any] = []
    text = data.decode("latin-1")
    pos = 0
    while True:
        hits = [i for i in (text.find('{"class_name"', pos), text.find('{"module"', pos)) if i >= 0]
        if not hits:
            break
        start = min(hits)
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        configs.append(obj)
        pos = end
    return configs, True


class H5Handler:
    """HDF5 files (Keras ``.h5`` models and weights), recognised by the HDF5 signature."""

    name = "hdf5"

    def sniff(self, data: bytes) -> bool:
        return _superblock_offset(data) is not None

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        ctx.note_format(self.name)
        attrs = _read_with_h5py(data)
        if attrs is not None:
            for name, text in attrs.items():
                try:
                    config = json.loads(text)
                except (ValueError, RecursionError) as e:
                    ctx.add(
                        Finding(
                            "TWS-H5-002",
                            Severity.HIGH,
                            f"HDF5 attribute {name!r} is not valid JSON, so the Keras config "
                            f"cannot be inspected: {str(e)[:200]}",
                            location,
                            {"attribute": name},
                        )
                    )
                    continue
                analyze_keras_config(config, location, ctx, where=name)
            return
        self.scan_fallback(data, location, ctx, h5py_failed=_h5py_available())

    def scan_fallback(
        self, data: bytes, location: str, ctx: ScanContext, *, h5py_failed: bool
    ) -> None:
        """Inspect ``data`` without h5py (also used when h5py could not open it)."""
        if h5py_failed:
            ctx.add(
                Finding(
                    "TWS-H5-001",
                    Severity.MEDIUM,
                    "HDF5 file cannot be opened by h5py (truncated or malformed); its Keras "
                    "config was searched for in the raw bytes instead",
                    location,
                )
            )
        configs, named = extract_configs_from_bytes(data)
        if not named:
            return
        if not configs:
            ctx.add(
                Finding(
                    "TWS-H5-002",
                    Severity.HIGH,
                    "HDF5 file has a Keras config attribute that cannot be inspected "
                    "(stored compressed, split or malformed): cannot vouch for it",
                    location,
                )
            )
            return
        for i, config in enumerate(configs):
            analyze_keras_config(config, location, ctx, where=f"attribute#{i}")


def _h5py_available() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


HANDLER = H5Handler()
