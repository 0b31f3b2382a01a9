"""Stable rule ids of the safe loader (refusals, manifests, telemetry), in the rule catalogue."""

from __future__ import annotations

from trainwarden.findings import Severity
from trainwarden.rules import Rule, register

__all__ = ["RULES", "Rule"]

RULES: dict[str, Rule] = register(
    [
        Rule(
            "TWL-CONSTRUCT-REFUSED",
            Severity.CRITICAL,
            "the pickle asked the unpickler to call, allocate or BUILD something outside the "
            "closed constructor set; refused before the call",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-DECOMPRESSION-LIMIT",
            Severity.HIGH,
            "a compressed joblib file, the members of an `.npz` together, or the records of a "
            "PyTorch zip other than its storages together, inflate past the limit (200x the "
            "file's size, at least 256 MiB, at most the policy's `max_decompressed_bytes`)",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-GLOBAL-DANGEROUS",
            Severity.CRITICAL,
            "at load time, the pickle asked for a global on the denylist; refused before it was "
            "touched",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-GLOBAL-UNKNOWN",
            Severity.HIGH,
            "at load time, a global the policy does not list as safe (refused in block mode, "
            "warned in warn mode)",
            threats=("T1", "T7"),
            guide="loading.md",
            severity_note="policy `unknown_severity` (HIGH)",
        ),
        Rule(
            "TWL-MAN-CHANGED",
            Severity.CRITICAL,
            "a file's sha256 differs from its manifest",
            threats=("T6",),
            guide="loading.md",
        ),
        Rule(
            "TWL-MAN-EXTRA",
            Severity.HIGH,
            "a file is not listed in the manifest covering it",
            threats=("T6",),
            guide="loading.md",
        ),
        Rule(
            "TWL-MAN-INVALID",
            Severity.HIGH,
            "the manifest is not a valid DSSE envelope / in-toto Statement",
            threats=("T6",),
            guide="loading.md",
        ),
        Rule(
            "TWL-MAN-MISSING",
            Severity.CRITICAL,
            "a file listed in the manifest is missing",
            threats=("T6",),
            guide="loading.md",
        ),
        Rule(
            "TWL-MAN-REQUIRED",
            Severity.HIGH,
            "no manifest, and one is required",
            threats=("T6",),
            guide="loading.md",
        ),
        Rule(
            "TWL-MAN-SIGNATURE",
            Severity.CRITICAL,
            "no valid signature by the trusted key (or unsigned)",
            threats=("T6",),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-COMPILE",
            Severity.MEDIUM,
            "`compile()` during a load, outside an import",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-DLOPEN",
            Severity.CRITICAL,
            "`ctypes.dlopen` during a load, outside an import",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-EXEC",
            Severity.HIGH,
            "`exec`/`eval` of a code object during a load, outside an import",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-FIND-CLASS",
            Severity.INFO,
            "the globals the unpickler resolved",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-IMPORT",
            Severity.LOW,
            "modules imported during a load (with the code their import ran)",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-OVERFLOW",
            Severity.MEDIUM,
            "more than 10,000 audit events in one load; the rest were not kept",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-SOCKET",
            Severity.CRITICAL,
            "`socket.connect` / `socket.bind` during a load",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-SUBPROCESS",
            Severity.CRITICAL,
            "`subprocess.Popen`, `os.exec*`, `os.posix_spawn`, `os.spawn*`, `os.fork` during a "
            "load",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-SYSTEM",
            Severity.CRITICAL,
            "`os.system` during a load",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
        Rule(
            "TWL-TEL-WRITE",
            Severity.HIGH,
            "a file opened for writing, removed or renamed during a load",
            threats=("T1", "T7"),
            guide="loading.md",
        ),
    ]
)
