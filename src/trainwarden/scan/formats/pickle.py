"""Raw pickle streams (``pickle.dump``, ``torch.save`` legacy pickles, uncompressed joblib)."""

from __future__ import annotations

from trainwarden.scan.pickle_vm import analyze_pickle, looks_like_pickle
from trainwarden.scan.types import ScanContext

__all__ = ["HANDLER", "PickleHandler", "scan_pickle"]


def scan_pickle(
    data: object, location: str, ctx: ScanContext, *, max_pickles: int | None = None, start: int = 0
) -> tuple[object, ...]:
    """Analyse ``data`` as pickle(s), report into ``ctx``; returns the persistent ids seen."""
    from trainwarden.scan.engine import FileScan

    policy = ctx.policy if isinstance(ctx, FileScan) else None
    deadline = ctx.deadline if isinstance(ctx, FileScan) else None
    analysis = analyze_pickle(
        data,  # type: ignore[arg-type]
        policy=policy,
        limits=ctx.limits,
        location=location,
        max_pickles=max_pickles,
        start=start,
        deadline=deadline,
    )
    for f in analysis.findings:
        ctx.add(f)
    if isinstance(ctx, FileScan):
        ctx.note_globals(g.qualname for g in analysis.globals)
    return analysis.persistent_ids


class PickleHandler:
    name = "pickle"
    accepts_buffer = True

    def sniff(self, data: bytes) -> bool:
        return looks_like_pickle(data)

    def scan(self, data: bytes, location: str, ctx: ScanContext) -> None:
        scan_pickle(data, location, ctx)


HANDLER = PickleHandler()
