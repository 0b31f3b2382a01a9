"""``trainwarden convert PATH --to safetensors``: rewrite a clean pickle checkpoint as safetensors.

The source is loaded with :func:`trainwarden.load` (so an unsafe file is refused with its
findings). Every tensor (and numpy array) goes into the safetensors file under its *flattened
key*: the path of dict keys / list indices from the root joined with ``/`` (a ``/`` or ``%``
inside a key is written ``%2F`` / ``%25``), so a flat ``state_dict`` keeps its own keys. Everything
else goes into a JSON sidecar ``<out>.meta.json``: the ``structure`` needed to rebuild the object
(:func:`from_safetensors`), the non-tensor leaves under their flattened keys (``metadata``), and
``aliases`` for tensors that were the same view of the same storage.
"""

from __future__ import annotations

import base64
import json
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainwarden.loading._loader import load_with_report
from trainwarden.loading._manifest import write_atomic
from trainwarden.loading._types import LoadError

if TYPE_CHECKING:
    import torch

    from trainwarden.scan._policy import Policy

__all__ = ["SEPARATOR", "ConvertResult", "from_safetensors", "sidecar_path", "to_safetensors"]

SEPARATOR = "/"
SIDECAR_FORMAT = "trainwarden-safetensors-sidecar/v1"


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote."""

    source: str
    output: str
    sidecar: str
    tensors: int
    aliases: int
    metadata_keys: int
    lossy: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``trainwarden convert --format json``)."""
        return {
            "source": self.source,
            "output": self.output,
            "sidecar": self.sidecar,
            "tensors": self.tensors,
            "aliases": self.aliases,
            "metadata_keys": self.metadata_keys,
            "lossy": list(self.lossy),
        }


def sidecar_path(out: str | os.PathLike[str]) -> Path:
    p = Path(out)
    return p.with_name(p.name + ".meta.json")


#: Values a converted object may expand to beyond 4 per value it holds: writing it out visits
#: shared containers once per reference.
_EXPANSION_SLACK = 1_000_000


def _children(obj: Any, np: Any, torch: Any) -> list[Any] | None:
    """What writing ``obj`` out (its encoding or its ``repr``) visits, or None for a leaf."""
    if isinstance(obj, (torch.Tensor, str, bytes, bytearray, int, float)) or obj is None:
        return None
    if isinstance(obj, np.ndarray):
        return list(obj.flat) if obj.dtype.hasobject else None
    if isinstance(obj, Mapping):
        return [x for item in obj.items() for x in item]
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return list(obj)
    state = getattr(obj, "__dict__", None)
    return list(state.values()) if isinstance(state, dict) else None


def _check_expansion(obj: Any) -> None:
    """Refuse an object whose containers are shared so often that writing it out would not end.

    A pickle can refer to one list from two places of the next, level after level: a file of a
    few hundred bytes loads as a small object whose tree has 2**60 nodes. Each value is walked
    once here (tree sizes are summed per distinct container), so the check is linear.
    """
    import numpy as np
    import torch

    sizes: dict[int, int] = {}
    held: list[Any] = []
    distinct = 0

    def size(o: Any) -> int:
        nonlocal distinct
        known = sizes.get(id(o))
        if known is not None:
            return known
        kids = _children(o, np, torch)
        if kids is None:
            return 1
        sizes[id(o)] = 1  # a reference back to a container being walked counts once
        held.append(o)
        distinct += 1 + len(kids)
        total = 1 + sum(size(k) for k in kids)
        sizes[id(o)] = total
        return total

    total = size(obj)
    if total > 4 * distinct + _EXPANSION_SLACK:
        raise LoadError(
            f"the loaded object refers to the same containers so often that it expands to "
            f"{total} values (it holds {distinct}): it cannot be written out",
            hint="the file is built to exhaust memory and time when its object is walked; "
            "do not convert it",
        )


def _escape(key: str) -> str:
    return key.replace("%", "%25").replace(SEPARATOR, "%2F")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}{SEPARATOR}{key}" if prefix else key


class _Flattener:
    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.tensors: dict[str, torch.Tensor] = {}
        self.aliases: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        self.lossy: list[str] = []
        self._views: dict[tuple[Any, ...], str] = {}
        self._storages: set[int] = set()

    def add_tensor(self, key: str, t: torch.Tensor) -> str:
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        ident = (
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
            t.dtype,
        )
        if t.untyped_storage().nbytes() and ident in self._views:
            self.aliases[key] = self._views[ident]
            return key
        storage = t.untyped_storage().data_ptr()
        # safetensors stores one buffer per tensor: copy views of a storage already used (or
        # of a bigger storage) and non-contiguous tensors into their own compact memory.
        shared = storage in self._storages and t.untyped_storage().nbytes() > 0
        if shared or not t.is_contiguous() or t.untyped_storage().nbytes() != t.nbytes:
            t = t.contiguous().clone()
        self._storages.add(storage)
        self._views[ident] = key
        self.tensors[key] = t
        return key

    def encode(self, obj: Any, key: str) -> Any:
        torch = self.torch
        import numpy as np

        if isinstance(obj, torch.Tensor):
            return {"$tensor": self.add_tensor(key, obj)}
        if isinstance(obj, np.ndarray) and obj.dtype.kind in "biufc":
            return {"$ndarray": self.add_tensor(key, torch.from_numpy(np.ascontiguousarray(obj)))}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            self.metadata[key] = obj
            return obj
        if isinstance(obj, np.generic):
            value = obj.item()
            self.metadata[key] = value
            return {"$npscalar": value, "dtype": str(obj.dtype)}
        if isinstance(obj, Mapping):
            if all(isinstance(k, str) for k in obj):
                return {
                    "$dict": {k: self.encode(v, _join(key, _escape(k))) for k, v in obj.items()}
                }
            items = []
            for k, v in obj.items():
                items.append(
                    [
                        self.encode(k, _join(key, _escape(str(k)) + "#key")),
                        self.encode(v, _join(key, _escape(str(k)))),
                    ]
                )
            return {"$items": items}
        if isinstance(obj, torch.Size):
            return {"$size": list(obj)}
        if isinstance(obj, list):
            return [self.encode(v, _join(key, str(i))) for i, v in enumerate(obj)]
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return {"$tuple": [self.encode(v, _join(key, str(i))) for i, v in enumerate(obj)]}
        if isinstance(obj, torch.dtype):
            return {"$dtype": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {"$device": str(obj)}
        if isinstance(obj, (bytes, bytearray)):
            return {"$bytes": base64.b64encode(bytes(obj)).decode()}
        if isinstance(obj, (set, frozenset)):
            return {"$set": [self.encode(v, _join(key, str(i))) for i, v in enumerate(obj)]}
        # Anything else cannot be rebuilt without running its class: keep a description only.
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        self.lossy.append(f"{key or '<root>'} ({kind})")
        self.metadata[key] = repr(obj)
        return {"$repr": repr(obj), "type": kind}


def to_safetensors(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    policy: Policy | None = None,
) -> ConvertResult:
    """Convert ``source`` to ``out`` (default: the source with suffix ``.safetensors``).

    Raises :class:`UnsafeModelError` for a file that cannot be loaded safely; nothing is written
    then. Objects that are neither tensors, arrays nor plain data are kept as ``repr`` strings in
    the sidecar and listed in ``ConvertResult.lossy``.
    """
    from safetensors.torch import save_file

    src = Path(source)
    dst = Path(out) if out is not None else src.with_suffix(".safetensors")
    if dst.resolve() == src.resolve():
        raise LoadError(f"output {dst} would overwrite the source", hint="choose another -o path")
    obj, report = load_with_report(src, policy=policy, hash_file=True)
    _check_expansion(obj)
    flat = _Flattener()
    structure = flat.encode(obj, "")
    side = {
        "format": SIDECAR_FORMAT,
        "separator": SEPARATOR,
        "source": {"path": str(src), "sha256": report.sha256, "format": report.format},
        "safetensors": dst.name,
        "structure": structure,
        "aliases": flat.aliases,
        "metadata": flat.metadata,
        "lossy": flat.lossy,
    }
    side_path = sidecar_path(dst)
    with write_atomic(dst) as tmp_out, write_atomic(side_path) as tmp_side:
        tmp_side.write_text(json.dumps(side, indent=1, default=str) + "\n", encoding="utf-8")
        save_file(flat.tensors, str(tmp_out), metadata={"format": "pt", "sidecar": side_path.name})
    return ConvertResult(
        source=str(src),
        output=str(dst),
        sidecar=str(side_path),
        tensors=len(flat.tensors),
        aliases=len(flat.aliases),
        metadata_keys=len(flat.metadata),
        lossy=tuple(flat.lossy),
    )


# The sidecar is as untrusted as the model file it travels with: it is read within a limit, every
# node is checked, and a numpy scalar may only be of a kind that holds a value (no void buffer of
# a size the sidecar names).
SIDECAR_LIMIT = 512 * 1024 * 1024
_SCALAR_KINDS = frozenset("biufcmMUS")


def from_safetensors(path: str | os.PathLike[str]) -> Any:
    """Rebuild the converted object from ``path`` and its sidecar (aliases share storage again).

    The sidecar is untrusted: a file that is not one this module wrote (unreadable, over 512 MiB,
    not JSON, a node of an unknown or malformed shape, a tensor it names that the safetensors
    file lacks, a numpy scalar of a kind that holds no plain value) raises :class:`LoadError`
    naming it."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from trainwarden._internal.files import read_limited

    p = Path(path)
    side_path = sidecar_path(p)
    try:
        side = json.loads(read_limited(side_path, SIDECAR_LIMIT).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise LoadError(f"cannot read the sidecar {side_path}: {e}") from e
    if not isinstance(side, dict) or side.get("format") != SIDECAR_FORMAT:
        raise LoadError(f"{side_path} is not a trainwarden sidecar")
    tensors = load_file(str(p))

    def bad(what: str) -> LoadError:
        return LoadError(f"{side_path}: {what}")

    aliases = side.get("aliases", {})
    if not isinstance(aliases, dict):
        raise bad("'aliases' is not an object")
    for alias, target in aliases.items():
        if not isinstance(target, str) or target not in tensors:
            raise bad(f"alias {str(alias)[:80]!r} names no tensor of {p}")
        tensors[alias] = tensors[target]

    def tensor(name: Any) -> torch.Tensor:
        if not isinstance(name, str) or name not in tensors:
            raise bad(f"{str(name)[:80]!r} names no tensor of {p}")
        return tensors[name]

    def scalar(node: dict[str, Any]) -> Any:
        try:
            dtype = np.dtype(node["dtype"])
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"a numpy scalar's dtype is not one: {e}") from e
        if dtype.kind not in _SCALAR_KINDS or dtype.fields is not None:
            raise bad(f"a numpy scalar of dtype {str(dtype)[:80]!r} holds no plain value")
        return dtype.type(node["$npscalar"])

    def decode(node: Any) -> Any:
        if isinstance(node, list):
            return [decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "$tensor" in node:
            return tensor(node["$tensor"])
        if "$ndarray" in node:
            return tensor(node["$ndarray"]).numpy()
        if "$dict" in node:
            return {k: decode(v) for k, v in node["$dict"].items()}
        if "$items" in node:
            return {decode(k): decode(v) for k, v in node["$items"]}
        if "$tuple" in node:
            return tuple(decode(v) for v in node["$tuple"])
        if "$set" in node:
            return {decode(v) for v in node["$set"]}
        if "$size" in node:
            return torch.Size(node["$size"])
        if "$dtype" in node:
            dtype = getattr(torch, str(node["$dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise bad(f"{str(node['$dtype'])[:80]!r} is not a torch dtype")
            return dtype
        if "$device" in node:
            return torch.device(node["$device"])
        if "$bytes" in node:
            return base64.b64decode(node["$bytes"], validate=True)
        if "$npscalar" in node:
            return scalar(node)
        if "$repr" in node:
            return node["$repr"]
        raise bad(f"unknown node {sorted(node)[:3]}")

    try:
        return decode(side.get("structure"))
    except LoadError:
        raise
    except (
        TypeError,
        ValueError,
        AttributeError,
        RuntimeError,
        OverflowError,
        RecursionError,
    ) as e:
        # A node of the wrong shape ($dict not an object, an unhashable key, a size that is no
        # list of integers, a device that is none...): not what this module writes.
        raise bad(f"a node is malformed ({type(e).__name__}: {str(e)[:200]})") from e
