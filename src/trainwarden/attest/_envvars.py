"""Environment variables that change which code a training job loads, each with its reason.

Recorded in every snapshot when set. The severity is what ``attest verify`` reports when the
variable is set at all (``None``: recorded and compared with a baseline, never reported alone).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from trainwarden.findings import Severity

__all__ = [
    "INJECTION_VARIABLES",
    "LOADER_PREFIXES",
    "LOADER_VARIABLES",
    "LoaderVariable",
    "describe",
    "helper_environment",
    "loader_environment",
]


@dataclass(frozen=True)
class LoaderVariable:
    """A variable that changes what code runs, why, and how loud its presence is."""

    name: str
    reason: str
    severity: Severity | None


_V = LoaderVariable
_H, _M, _L = Severity.HIGH, Severity.MEDIUM, Severity.LOW

LOADER_VARIABLES: tuple[LoaderVariable, ...] = (
    # Python interpreter
    _V("PYTHONPATH", "directories searched before site-packages: can shadow any module", _M),
    _V("PYTHONHOME", "replaces the standard library location entirely", _H),
    _V("PYTHONSTARTUP", "file executed at the start of every interactive session", _M),
    _V("PYTHONINSPECT", "drops into an interactive prompt (which runs PYTHONSTARTUP)", _M),
    _V("PYTHONUSERBASE", "moves the user site-packages (and its .pth files)", _M),
    _V("PYTHONNOUSERSITE", "disables the user site-packages (reduces what loads)", None),
    _V("PYTHONSAFEPATH", "stops prepending the script directory (reduces what loads)", None),
    _V("PYTHONEXECUTABLE", "overrides sys.executable on macOS (subprocesses run it)", _M),
    _V("PYTHONBREAKPOINT", "callable imported and run by every breakpoint() call", _M),
    _V("PYTHONWARNINGS", "warning filters import the modules their categories name", _L),
    _V("PYTHONPYCACHEPREFIX", "bytecode is read from this tree instead of __pycache__", _M),
    _V("PYTHONPLATLIBDIR", "changes the directory name of platform-specific libraries", _M),
    _V("PYTHONOPTIMIZE", "loads .opt-N bytecode and strips assert statements", _L),
    _V("PYTHONCASEOK", "case-insensitive imports on macOS/Windows", _L),
    # Native dynamic loader
    _V("LD_PRELOAD", "shared objects injected into every process before all others", _H),
    _V("LD_AUDIT", "rtld-audit libraries loaded into every process", _H),
    _V("LD_LIBRARY_PATH", "directories searched first for every shared library", _M),
    _V("GCONV_PATH", "iconv loads character-conversion modules (.so) from here", _H),
    _V("PATH", "executables run by subprocesses (compilers, ninja, nvcc, git)", None),
    # CUDA / NCCL / torch / compilers
    _V("CUDA_INJECTION64_PATH", "the CUDA driver loads this library into the process", _H),
    _V("NCCL_NET_PLUGIN", "NCCL dlopens this network plugin", _M),
    _V("NCCL_TUNER_PLUGIN", "NCCL dlopens this tuner plugin", _M),
    _V("NCCL_PROFILER_PLUGIN", "NCCL dlopens this profiler plugin", _M),
    _V("TORCH_EXTENSIONS_DIR", "torch.utils.cpp_extension loads prebuilt .so files from here", _L),
    _V("TORCHINDUCTOR_CACHE_DIR", "torch.compile loads cached generated code from here", _L),
    _V("TRITON_CACHE_DIR", "Triton loads cached compiled kernels from here", _L),
    _V("TORCH_HOME", "torch.hub loads model code from here", _L),
    _V("HF_MODULES_CACHE", "transformers imports trust_remote_code modules from here", _L),
    _V("HF_HOME", "Hugging Face cache root (remote code modules live below it)", _L),
    _V("CUDA_HOME", "toolkit used to build CUDA extensions", _L),
    _V("CUDA_PATH", "toolkit used to build CUDA extensions", _L),
    _V("CUDA_CACHE_PATH", "the driver's JIT cache of compiled GPU code", _L),
    _V("CC", "C compiler used by torch.compile and extension builds", _L),
    _V("CXX", "C++ compiler used by torch.compile and extension builds", _L),
)

# Every DYLD_* variable changes the macOS loader (DYLD_INSERT_LIBRARIES is LD_PRELOAD's twin).
LOADER_PREFIXES: tuple[LoaderVariable, ...] = (
    _V("DYLD_", "macOS dynamic loader: library injection and search paths", _H),
)

_BY_NAME = {v.name: v for v in LOADER_VARIABLES}


def describe(name: str) -> LoaderVariable | None:
    """The :class:`LoaderVariable` for ``name`` (prefix families included), or None."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    for v in LOADER_PREFIXES:
        if name.startswith(v.name):
            return LoaderVariable(name, v.reason, v.severity)
    return None


# Variables that inject native code into every process started with them. Helper processes
# TrainWarden starts (the collector, git) run without them so attesting cannot run the payload.
INJECTION_VARIABLES = frozenset(
    {"LD_PRELOAD", "LD_AUDIT", "GCONV_PATH", "CUDA_INJECTION64_PATH", "DYLD_INSERT_LIBRARIES"}
)


def helper_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without code-injection variables."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if k not in INJECTION_VARIABLES}


def loader_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The loader-relevant variables that are set in ``environ`` (default: this process)."""
    env = os.environ if environ is None else environ
    return {k: env[k] for k in sorted(env) if describe(k) is not None}
