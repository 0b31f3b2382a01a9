"""Static scanner for model files: finds code execution and tampering without running anything.

Start with :func:`scan_path` (files or directories) or :func:`scan_bytes`; the pickle analysis
itself is :func:`trainwarden.scan._pickle_vm.analyze_pickle` and the allowlist policy is
:class:`Policy`.
"""

from __future__ import annotations

from trainwarden.scan._engine import scan_bytes, scan_file, scan_path, scan_paths
from trainwarden.scan._pickle_vm import GlobalRef, PickleAnalysis, analyze_pickle
from trainwarden.scan._policy import Policy
from trainwarden.scan._types import (
    FileReport,
    FormatHandler,
    Limits,
    ScanContext,
    ScanError,
    ScanReport,
    Verdict,
)

__all__ = [
    "FileReport",
    "FormatHandler",
    "GlobalRef",
    "Limits",
    "PickleAnalysis",
    "Policy",
    "ScanContext",
    "ScanError",
    "ScanReport",
    "Verdict",
    "analyze_pickle",
    "scan_bytes",
    "scan_file",
    "scan_path",
    "scan_paths",
]
