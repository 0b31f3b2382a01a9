"""The registry of format handlers, in sniff-priority order (first match wins).

Each handler module in this package exposes ``HANDLER`` (see
:class:`trainwarden.scan.types.FormatHandler`); formats are recognised by content only.
"""

from __future__ import annotations

from trainwarden.scan.formats import pickle as _pickle
from trainwarden.scan.formats import zip as _zip
from trainwarden.scan.types import FormatHandler

__all__ = ["HANDLERS"]

HANDLERS: list[FormatHandler] = [
    _zip.HANDLER,
    _pickle.HANDLER,
]
