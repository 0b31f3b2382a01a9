"""Raw pickle streams (``pickle.dump``, ``torch.save`` legacy pickles, uncompressed joblib)."""

from __future__ import annotations

from trainwarden.scan._pickle_vm import PickleAnalysis, analyze_pickle, looks_like_pickle
from trainwarden.scan._types import ScanContext

__all__ = ["HANDLER", "PickleHandler", "scan_pickle"]


_STRUCTURAL = frozenset(
    {"TWS-PKL-MALFORMED", "TWS-PKL-TRUNCATED", "TWS-PKL-TRAILING", "TWS-PKL-FRAME"}
)


def scan_pickle(
    data: object,
    location: str,
    ctx: ScanContext,
    *,
    max_pickles: int | None = None,
    start: int = 0,
    joblib: bool = True,
) -> tuple[object, ...]:
    """Analyse ``data`` as pickle(s), report into ``ctx``; returns the persistent ids seen.

    With ``joblib`` the stream is read the way joblib's unpickler reads it (array bytes after
    each NumpyArrayWrapper are data). Because the same file may also be handed to a plain
    ``pickle.load``, which would execute those bytes as opcodes, the stream is then analysed a
    second time that way and anything dangerous only that reading sees is reported as well.
    """
    policy = ctx.policy
    deadline = ctx.deadline

    def run(as_joblib: bool) -> PickleAnalysis:
        return analyze_pickle(
            data,  # type: ignore[arg-type]
            policy=policy,
            limits=ctx.limits,
            location=location,
            max_pickles=max_pickles,
            start=start,
            deadline=deadline,
            joblib=as_joblib,
        )

    analysis = run(joblib)
    findings = list(analysis.findings)
    globals_ = list(analysis.globals)
    if analysis.joblib_arrays:
        plain = run(False)
        seen = {(f.rule_id, f.evidence.get("global_")) for f in findings}
        for f in plain.findings:
            key = (f.rule_id, f.evidence.get("global_"))
            if f.rule_id not in _STRUCTURAL and key not in seen:
                seen.add(key)
                findings.append(f)
        globals_.extend(plain.globals)
    for f in findings:
        ctx.add(f)
    ctx.note_globals(g.qualname for g in globals_)
    return analysis.persistent_ids


_OPCODE_BYTES = frozenset(
    b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GB\x80\x81\x82\x83\x84\x85\x86\x87\x88"
    b"\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98C"
)


def probe_unclaimed(data: object, location: str, ctx: ScanContext) -> None:
    """Content no handler claimed may still be a pickle without header or STOP (Python runs
    such a payload before failing). Report it when the analysis sees it import anything."""
    buf: bytes = data if isinstance(data, bytes) else bytes(data[:1])  # type: ignore[index]
    if not buf or buf[0] not in _OPCODE_BYTES:
        return
    analysis = analyze_pickle(
        data,  # type: ignore[arg-type]
        policy=ctx.policy,
        limits=ctx.limits,
        location=location,
        max_pickles=1,
        joblib=False,
    )
    if not analysis.globals:
        return
    ctx.note_format("pickle")
    for f in analysis.findings:
        ctx.add(f)
    ctx.note_globals(g.qualname for g in analysis.globals)


def probe_polyglot(data: object, location: str, ctx: ScanContext, claimed_by: str) -> None:
    """Content another handler claimed whose first bytes are free (a tar header starts with a
    member name) may also be a pickle that ``pickle.load`` runs. Report it when the analysis
    reads a well-formed pickle that imports something, or any stream that reaches a DANGEROUS
    global before it fails; a header that merely decodes as opcodes and breaks stays quiet."""
    buf: bytes = data if isinstance(data, bytes) else bytes(data[:1])  # type: ignore[index]
    if not buf or buf[0] not in _OPCODE_BYTES:
        return
    from trainwarden.findings import Finding, Severity
    from trainwarden.scan._types import Verdict

    analysis = analyze_pickle(
        data,  # type: ignore[arg-type]
        policy=ctx.policy,
        limits=ctx.limits,
        location=location,
        max_pickles=1,
        joblib=False,
    )
    if not analysis.globals:
        return
    broken = any(f.rule_id in ("TWS-PKL-MALFORMED", "TWS-PKL-TRUNCATED") for f in analysis.findings)
    dangerous = any(g.verdict is Verdict.DANGEROUS for g in analysis.globals)
    if broken and not dangerous:
        return
    ctx.note_format("pickle")
    names = sorted({g.qualname for g in analysis.globals})
    ctx.add(
        Finding(
            "TWS-PKL-POLYGLOT",
            Severity.HIGH,
            f"the content is a {claimed_by} archive and also a pickle that imports "
            f"{', '.join(names[:5])}: pickle.load runs it",
            location,
            {"claimed_by": claimed_by, "globals": names},
        )
    )
    for f in analysis.findings:
        ctx.add(f)
    ctx.note_globals(names)


class PickleHandler:
    name = "pickle"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return looks_like_pickle(data)

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        scan_pickle(data, location, ctx)


HANDLER = PickleHandler()
