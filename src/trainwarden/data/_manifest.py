"""Per-item content-hash manifests of a dataset: a directory of files, or an in-code Dataset.

A manifest lists, by dataset index, a digest of each item: the SHA-256 of each file's bytes for
a directory (files in sorted relative-path order, which is the order :class:`FileDataset`
serves them in), or :func:`item_digest` of ``dataset[i]`` for an in-code dataset. It is written
before training; a loader, a dataset or a file that later serves something else no longer
matches it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainwarden._internal.files import FileTooLargeError, read_limited
from trainwarden.errors import TrainWardenError

__all__ = [
    "DataError",
    "DataLimits",
    "DataManifest",
    "FileDataset",
    "dataset_manifest",
    "directory_manifest",
    "item_digest",
    "write_directory_manifest",
]

FORMAT = 1
_PERSON = b"tw-data-item-v1"


class DataError(TrainWardenError):
    """A dataset or manifest cannot be used (unreadable, malformed, over a limit, inconsistent)."""


@dataclass(frozen=True)
class DataLimits:
    """Bounds on what a manifest covers; exceeding one is an error, never a partial manifest."""

    max_items: int = 10_000_000
    max_file_bytes: int = 1 << 34
    max_manifest_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        for name in ("max_items", "max_file_bytes", "max_manifest_bytes"):
            if getattr(self, name) < 1:
                raise DataError(f"DataLimits.{name} must be positive")


@dataclass(frozen=True)
class DataManifest:
    """Digests of a dataset's items by index; ``paths`` (files only) names each item's file."""

    kind: str
    digests: tuple[str, ...]
    paths: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.digests)

    def to_dict(self) -> dict[str, Any]:
        items: list[dict[str, str]] = (
            [{"path": p, "sha256": d} for p, d in zip(self.paths, self.digests, strict=True)]
            if self.kind == "files"
            else [{"digest": d} for d in self.digests]
        )
        return {"format": FORMAT, "kind": self.kind, "items": items}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as JSON, atomically (a crash leaves the old file or none)."""
        dest = Path(path)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, dest)

    @classmethod
    def load(cls, path: str | os.PathLike[str], limits: DataLimits | None = None) -> DataManifest:
        """Read a manifest written by :meth:`save`; anything malformed is a :class:`DataError`."""
        limits = limits or DataLimits()
        p = Path(path)
        try:
            obj = json.loads(read_limited(p, limits.max_manifest_bytes))
        except FileTooLargeError as e:
            raise DataError(f"{p}: manifest larger than {limits.max_manifest_bytes} bytes") from e
        except (OSError, ValueError, RecursionError) as e:
            raise DataError(f"{p}: cannot read the data manifest ({e})") from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DataError(f"{p}: not a data manifest (format {FORMAT})")
        kind, items = obj.get("kind"), obj.get("items")
        if kind not in ("files", "items") or not isinstance(items, list):
            raise DataError(f"{p}: malformed data manifest (kind or items)")
        key = "sha256" if kind == "files" else "digest"
        digests: list[str] = []
        paths: list[str] = []
        for n, it in enumerate(items):
            d = it.get(key) if isinstance(it, dict) else None
            if not isinstance(d, str) or len(d) not in (32, 64):
                raise DataError(f"{p}: item {n} has no valid {key}")
            digests.append(d)
            if kind == "files":
                path = it.get("path")
                if not isinstance(path, str) or not path:
                    raise DataError(f"{p}: item {n} has no path")
                paths.append(path)
        return cls(kind, tuple(digests), tuple(paths))


def item_digest(item: Any) -> str:
    """BLAKE2b-128 of a dataset item's exact content: tensors' dtype, shape and bits; numbers,
    strings and bytes by type and value; tuples, lists and dicts by structure."""
    h = hashlib.blake2b(digest_size=16, person=_PERSON)
    _feed(h, item)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(f"B{len(obj)}|".encode())
        h.update(bytes(obj))
    elif isinstance(obj, (bool, int, float, str)) or obj is None:
        h.update(f"V{type(obj).__name__}|{obj!r}|".encode())
    elif isinstance(obj, (tuple, list)):
        h.update(f"L{len(obj)}|".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    else:
        # An item we cannot hash exactly would make the manifest a quiet pass: refuse it.
        raise DataError(
            f"cannot hash a dataset item of type {type(obj).__name__}",
            hint="return tensors, numbers, strings, bytes, or tuples/lists/dicts of them",
        )


def _walk(root: Path, limits: DataLimits) -> Iterator[tuple[str, Path]]:
    count = 0
    stack = [root]
    found: list[tuple[str, Path]] = []
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda ent: ent.name)
        except OSError as err:
            raise DataError(f"{d}: cannot list the directory ({err.strerror or err})") from err
        for ent in entries:
            p = Path(ent.path)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                # A link can point outside the dataset or change target after the manifest.
                raise DataError(f"{p}: is a symbolic link", hint="copy the file into the dataset")
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                count += 1
                if count > limits.max_items:
                    raise DataError(f"{root}: more than {limits.max_items} files")
                if st.st_size > limits.max_file_bytes:
                    raise DataError(f"{p}: larger than {limits.max_file_bytes} bytes")
                found.append((p.relative_to(root).as_posix(), p))
            else:
                raise DataError(f"{p}: not a regular file, directory or link")
    yield from sorted(found)


def _sha256(path: Path) -> str:
    from trainwarden.loading._manifest import hash_file
    from trainwarden.loading._types import ManifestError

    try:
        return hash_file(path)
    except ManifestError as e:
        raise DataError(e.message) from e


def directory_manifest(
    root: str | os.PathLike[str], limits: DataLimits | None = None
) -> DataManifest:
    """The manifest of every regular file under ``root``, in sorted relative-path order.

    Symbolic links, devices, pipes and sockets are refused (a :class:`DataError`): a manifest
    that skipped them would vouch for a dataset it did not read.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: not a directory")
    limits = limits or DataLimits()
    pairs = list(_walk(base, limits))
    return DataManifest(
        "files", tuple(_sha256(p) for _, p in pairs), tuple(rel for rel, _ in pairs)
    )


def write_directory_manifest(
    root: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    limits: DataLimits | None = None,
) -> tuple[Path, DataManifest]:
    """Write the manifest of ``root`` to ``output`` (default ``<root>.manifest.json`` beside it).

    An output inside ``root`` is refused: the manifest would become an item of its own dataset.
    """
    base = Path(root)
    dest = Path(output) if output is not None else base.with_name(base.name + ".manifest.json")
    try:
        inside = dest.resolve().is_relative_to(base.resolve())
    except OSError as e:
        raise DataError(f"{dest}: cannot resolve the output path ({e})") from e
    if inside:
        raise DataError(f"{dest}: the manifest may not be written inside the dataset {base}")
    manifest = directory_manifest(base, limits)
    try:
        manifest.save(dest)
    except OSError as e:
        raise DataError(f"{dest}: cannot write the manifest ({e.strerror or e})") from e
    return dest, manifest


def dataset_manifest(dataset: Any, limits: DataLimits | None = None) -> DataManifest:
    """The manifest of an in-code dataset: :func:`item_digest` of ``dataset[i]`` for every i."""
    limits = limits or DataLimits()
    n = len(dataset)
    if n > limits.max_items:
        raise DataError(f"the dataset has {n} items, more than {limits.max_items}")
    return DataManifest("items", tuple(item_digest(dataset[i]) for i in range(n)))


class FileDataset(torch.utils.data.Dataset[Any]):
    """The files under ``root`` in the manifest's order; item ``i`` is ``transform(bytes)``.

    :meth:`trusted_item` re-reads file ``i`` and refuses bytes whose SHA-256 is not the
    manifest's, so the verifier compares batches with what the files held when the manifest
    was written.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[bytes], Any] | None = None,
        limits: DataLimits | None = None,
    ) -> None:
        self.root = Path(root)
        self.transform = transform
        self.limits = limits or DataLimits()
        self.paths = [p for _, p in _walk(self.root, self.limits)]

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> bytes:
        # The walk refused links, pipes and oversized files; a file swapped for one since is
        # refused here too (a FIFO would hang the loader, a link would read another file).
        p = self.paths[i]
        try:
            return read_limited(p, self.limits.max_file_bytes, follow=False)
        except OSError as e:
            raise DataError(f"{p}: cannot read item {i} ({e.strerror or e})") from e

    def __getitem__(self, i: int) -> Any:
        raw = self._read(i)
        return (
            self.transform(raw)
            if self.transform
            else torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        )

    def trusted_item(self, i: int, manifest: DataManifest) -> Any:
        raw = self._read(i)
        if hashlib.sha256(raw).hexdigest() != manifest.digests[i]:
            raise DataError(f"{self.paths[i]}: content differs from the manifest")
        return (
            self.transform(raw)
            if self.transform
            else torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        )
