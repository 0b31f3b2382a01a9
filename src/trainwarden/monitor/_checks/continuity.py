"""Continuity of the weights and of the optimizer state from one step boundary to the next.

After every checked ``optimizer.step()`` the parameters, buffers and optimizer state tensors are
fingerprinted; the same tensors must have the same fingerprints at the next forward, at the next
step and between gradient-accumulation micro-batches. Anything else changed them outside the
optimizer.
"""

from __future__ import annotations

from typing import Any

from trainwarden.monitor._check import Check
from trainwarden.monitor._fingerprint import combine

__all__ = ["OptimizerStateContinuity", "WeightContinuity"]

Rows = list[tuple[int, str]]
Fp = tuple[list[str], list[int], Rows]


def _subset(ref: Fp, keep: set[str]) -> Fp:
    idx = [i for i, n in enumerate(ref[0]) if n in keep]
    return [ref[0][i] for i in idx], [ref[1][i] for i in idx], [ref[2][i] for i in idx]


class WeightContinuity(Check):
    """Parameters and buffers between the step and the next forward, micro-batches, step."""

    name = "weights"
    rules = ("TWM-WEIGHT-EDIT", "TWM-WEIGHT-EDIT-PRESTEP", "TWM-WEIGHT-REPLACED")
    cost = "keyed hash of every parameter and buffer after the step, at the forward and at step()"

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.post: Fp | None = None
        self._fwd: dict[str, Fp] | None = None

    def _fingerprint(self, named: list[tuple[str, Any]], cb: Any) -> None:
        self.mon.fingerprint(named, cb)

    def _compare(self, rule: str, what: str, ref: Fp, now: Fp) -> None:
        mon = self.mon
        ref_names, ref_ids, ref_rows = ref
        names, ids, rows = now
        if ref_names != names or ref_ids != ids:
            before = dict(zip(ref_names, ref_ids, strict=True))
            after = dict(zip(names, ids, strict=True))
            changed = sorted(
                set(before) ^ set(after)
                | {n for n in before if n in after and before[n] != after[n]}
            )
            mon.alert(
                "TWM-WEIGHT-REPLACED",
                f"{what}: tensors replaced, added or removed outside the optimizer: "
                + ", ".join(changed[:10]),
                {"tensors": changed[:50]},
            )
            ref_map = dict(zip(ref_names, ref_rows, strict=True))
            pairs = [(n, ref_map[n], r) for n, r in zip(names, rows, strict=True) if n in ref_map]
        else:
            pairs = list(zip(names, ref_rows, rows, strict=True))
        bad = [(n, a, b) for n, a, b in pairs if a != b]
        if bad:
            mon.alert(
                rule,
                f"{what}: {len(bad)} tensor(s) changed outside the optimizer: "
                + ", ".join(n for n, _, _ in bad[:10]),
                {
                    "tensors": [n for n, _, _ in bad[:50]],
                    "fingerprints": {n: {"expected": a, "actual": b} for n, a, b in bad[:10]},
                },
            )

    def forward_pre(self, first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mon = self.mon
        if first and self.post is not None:
            ref = self.post
            holder: dict[str, Fp] = {}
            self._fwd = holder

            def got(names: list[str], ids: list[int], rows: Rows) -> None:
                holder["rows"] = (names, ids, rows)
                self._compare(
                    "TWM-WEIGHT-EDIT",
                    "between optimizer step and next forward",
                    ref,
                    (names, ids, rows),
                )

            self._fingerprint(mon.weights(buffers=True), got)
        elif not first and self.post is not None and self._fwd is not None:
            # Later micro-batches: parameters must not have been written since the step. Hashed
            # every time: a write through `.data` moves no version counter, and undone before
            # step() the pre-step pass would not see it, yet it changed this micro-batch's
            # gradient.
            # Each micro-batch is compared with the one before it (the first with the step), so
            # one write is reported once, at the micro-batch it reached.
            params = mon.weights(buffers=False)
            box = self._fwd
            sub = _subset(self.post, {n for n, _ in params})

            def got_micro(names: list[str], ids: list[int], rows: Rows) -> None:
                ref = box.get("micro", sub)
                box["micro"] = (names, ids, rows)
                self._compare(
                    "TWM-WEIGHT-EDIT",
                    "between gradient-accumulation micro-batches",
                    ref,
                    (names, ids, rows),
                )

            self._fingerprint(params, got_micro)

    def step_pre(self, has_closure: bool) -> None:
        mon = self.mon
        if mon.awaiting_forward and self.post is not None:
            # No forward of the watched model since the last step (a closure-based step, or a
            # loop that calls a different module): check the weights here instead.
            ref_w = self.post
            self._fingerprint(
                mon.weights(buffers=True),
                lambda n, i, r: self._compare(
                    "TWM-WEIGHT-EDIT", "between two optimizer steps", ref_w, (n, i, r)
                ),
            )
        holder, self._fwd = self._fwd, None
        if mon.config.check_weights_prestep and holder is not None:
            params = mon.weights(buffers=False)
            keep = {n for n, _ in params}

            def got_pre(names: list[str], ids: list[int], rows: Rows) -> None:
                # On GPU the forward's values arrive at the same flush, just before these.
                if "rows" in holder:
                    self._compare(
                        "TWM-WEIGHT-EDIT-PRESTEP",
                        "between forward and optimizer step",
                        _subset(holder["rows"], keep),
                        (names, ids, rows),
                    )

            self._fingerprint(params, got_pre)

    def step_post(self) -> None:
        mon = self.mon
        # Fingerprint this boundary (step N end -> step N+1 start) or forget the last one, so
        # an unchecked boundary is never compared against stale values.
        self.post = None
        if not mon.step_checked:
            return
        weights = mon.weights(buffers=True)

        def got_w(names: list[str], ids: list[int], rows: Rows) -> None:
            self.post = (names, ids, rows)

        self._fingerprint(weights, got_w)

    def digest(self) -> list[tuple[str, int | float]]:
        if self.post is None:
            return []
        params = {n for n, _ in self.mon.weights(buffers=False)}
        names, _, rows = self.post
        return [(f"weight:{n}", r[0]) for n, r in zip(names, rows, strict=True) if n in params]

    def record(self, rec: dict[str, Any]) -> None:
        if self.post is not None:
            rec["weights_hash"] = combine(self.post[0], self.post[2])


class OptimizerStateContinuity(Check):
    """Optimizer state tensors (moments, momentum buffers, step) between two steps."""

    name = "optimizer-state"
    rules = ("TWM-OPTSTATE-EDIT",)
    cost = "keyed hash of every optimizer state tensor after the step and at the next step()"

    def __init__(self, monitor: Any) -> None:
        super().__init__(monitor)
        self.post: tuple[list[str], Rows] | None = None

    def step_pre(self, has_closure: bool) -> None:
        if self.post is None:
            return
        ref = self.post

        def got(names: list[str], ids: list[int], rows: Rows) -> None:
            self._compare(ref, (names, rows))

        self.mon.fingerprint(list(self.mon.state_tensors()), got)

    def _compare(self, ref: tuple[list[str], Rows], now: tuple[list[str], Rows]) -> None:
        ref_map = dict(zip(ref[0], ref[1], strict=True))
        now_map = dict(zip(now[0], now[1], strict=True))
        changed = sorted(n for n in ref_map.keys() & now_map.keys() if ref_map[n] != now_map[n])
        missing = sorted(ref_map.keys() - now_map.keys())
        added = sorted(now_map.keys() - ref_map.keys())
        if not (changed or missing or added):
            return
        parts = []
        if changed:
            parts.append(f"{len(changed)} tensor(s) edited: " + ", ".join(changed[:10]))
        if missing:
            parts.append("removed: " + ", ".join(missing[:10]))
        if added:
            parts.append("added: " + ", ".join(added[:10]))
        self.mon.alert(
            "TWM-OPTSTATE-EDIT",
            "optimizer state changed between two steps: " + "; ".join(parts),
            {
                "changed": changed[:50],
                "removed": missing[:50],
                "added": added[:50],
                "fingerprints": {
                    n: {"expected": ref_map[n], "actual": now_map[n]} for n in changed[:10]
                },
            },
        )

    def step_post(self) -> None:
        self.post = None
        if not self.mon.step_checked:
            return

        def got(names: list[str], ids: list[int], rows: Rows) -> None:
            self.post = (names, rows)

        self.mon.fingerprint(list(self.mon.state_tensors()), got)

    def digest(self) -> list[tuple[str, int | float]]:
        if self.post is None:
            return []
        return [("optimizer_state", int(combine(*self.post)[:16], 16) - (1 << 63))]

    def record(self, rec: dict[str, Any]) -> None:
        if self.post is not None:
            rec["state_hash"] = combine(*self.post)
