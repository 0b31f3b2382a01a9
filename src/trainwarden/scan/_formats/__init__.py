"""The registry of format handlers, in sniff-priority order (first match wins).

Each handler module in this package exposes ``HANDLER`` (see
:class:`trainwarden.scan._types.FormatHandler`); formats are recognised by content only.
"""

from __future__ import annotations

from trainwarden.scan._formats import archive as _archive
from trainwarden.scan._formats import compressed as _compressed
from trainwarden.scan._formats import gguf as _gguf
from trainwarden.scan._formats import h5 as _h5
from trainwarden.scan._formats import keras as _keras
from trainwarden.scan._formats import npy as _npy
from trainwarden.scan._formats import onnx as _onnx
from trainwarden.scan._formats import pickle as _pickle
from trainwarden.scan._formats import safetensors as _safetensors
from trainwarden.scan._formats import torch_legacy as _torch_legacy
from trainwarden.scan._formats import zip as _zip
from trainwarden.scan._types import FormatHandler

__all__ = ["HANDLERS"]

# Order matters: .keras before the generic zip (it excludes zips with *.pkl members, which are
# PyTorch's); formats with a strong magic or a validated structure (npy, 7z, GGUF, HDF5,
# safetensors, ONNX) before the compression sniff, whose zlib/lzma-alone magics are only two
# bytes (a safetensors header length can look like a zlib header); pickle, whose protocol-0
# sniff accepts many first bytes, after everything with a header; the bare Keras JSON config
# last. Content no handler claims is still probed as a header-less pickle by the engine.
HANDLERS: list[FormatHandler] = [
    _keras.HANDLER,
    _zip.HANDLER,
    _npy.HANDLER,
    _archive.SEVENZIP,
    _gguf.HANDLER,
    _h5.HANDLER,
    _safetensors.HANDLER,
    _onnx.HANDLER,
    _compressed.HANDLER,
    _torch_legacy.HANDLER,
    _archive.TAR,
    _pickle.HANDLER,
    _keras.JSON_HANDLER,
]
