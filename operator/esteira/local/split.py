"""Pure traffic choice: which revision serves one request, by weight or by the caller's pin."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    """The arms serving now and the canary's share of traffic (percent)."""

    stable: int
    canary: int | None = None
    weight: int = 0

    @property
    def revisions(self) -> tuple[int, ...]:
        return (self.stable,) if self.canary is None else (self.stable, self.canary)


class NotServing(Exception):
    """A pinned revision that no arm serves; the router answers 404 with this message."""


def choose(split: Split, draw: float, pinned: str | None = None) -> int:
    """The revision for one request. `draw` is uniform in [0, 1): below weight/100 means the canary.

    A pin (the `x-model-revision` header) wins over the weights, so a person can try either arm.
    """
    if pinned is not None and pinned.strip():
        text = pinned.strip()
        if not text.isdigit() or int(text) not in split.revisions:
            serving = ", ".join(str(r) for r in split.revisions)
            raise NotServing(f"revision {text!r} is not serving (serving: {serving})")
        return int(text)
    if split.canary is not None and draw * 100 < split.weight:
        return split.canary
    return split.stable


def should_mirror(split: Split, chosen: int, mirror: bool) -> bool:
    """While the canary is mirroring (rollout.mirror, before its first step), every request stable answers is also
    sent to it (its answer ignored)."""
    return mirror and split.canary is not None and chosen == split.stable
