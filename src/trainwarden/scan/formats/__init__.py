"""The registry of format handlers, in sniff-priority order (first match wins).

Each handler module in this package exposes ``HANDLER`` (see
:class:`trainwarden.scan.types.FormatHandler`); formats are recognised by content only.
"""

from __future__ import annotations

from trainwarden.scan.formats import archive as _archive
from trainwarden.scan.formats import compressed as _compressed
from trainwarden.scan.formats import npy as _npy
from trainwarden.scan.formats import pickle as _pickle
from trainwarden.scan.formats import torch_legacy as _torch_legacy
from trainwarden.scan.formats import zip as _zip
from trainwarden.scan.types import FormatHandler

__all__ = ["HANDLERS"]

HANDLERS: list[FormatHandler] = [
    _zip.HANDLER,
    _npy.HANDLER,
    _archive.SEVENZIP,
    _compressed.HANDLER,
    _torch_legacy.HANDLER,
    _archive.TAR,
    _pickle.HANDLER,
]
