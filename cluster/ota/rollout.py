"""The decisions of an UpdatePlan's rollout, as a pure function of the plan and its nodes.

The controller in the server reads an ``UpdatePlan`` (group ``ota.k3py.io``) and the status its
nodes report, calls :func:`step`, and applies the answer: nodes to start (cordoned and drained
first when the plan says ``drain``), nodes to uncordon, and the plan's phase. Keeping the rules
here, free of I/O and clocks, is what lets the tests walk every rollout path exactly.

Rules (hawkBit's rollout groups with an error threshold, and K3s's system-upgrade-controller's
concurrency, with a ``maxUnavailable`` it lacks):

- nodes are taken in name order; the first ``canary`` nodes are the first batch, the others
  follow in batches of ``maxUnavailable``; a batch starts only when the one before it is wholly
  ``Healthy`` and ``pauseSeconds`` have passed since its last node became so;
- never more than ``maxUnavailable`` nodes are between ``Downloading`` and ``Rebooting``;
- once ``failureThreshold`` nodes are ``Failed`` or ``RolledBack`` the plan is ``Halted``: no
  node starts any more (those in flight finish); it is ``Complete`` when every node is Healthy;
- a node that stays in one phase between ``Downloading`` and ``Rebooting`` for
  ``progressDeadlineSeconds`` (default 600, as a Deployment's) has ``Failed``: its agent cannot
  update (not started by the firmware launcher, no A/B boot state) or is gone, and it must not
  hold a place of ``maxUnavailable`` for ever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

PENDING, DOWNLOADING, VERIFYING, INSTALLING = "Pending", "Downloading", "Verifying", "Installing"
REBOOTING, HEALTHY, ROLLED_BACK, FAILED = "Rebooting", "Healthy", "RolledBack", "Failed"
NODE_PHASES = (PENDING, DOWNLOADING, VERIFYING, INSTALLING, REBOOTING, HEALTHY, ROLLED_BACK,
               FAILED)  # fmt: skip
IN_FLIGHT = frozenset({DOWNLOADING, VERIFYING, INSTALLING, REBOOTING})
FAILURES = frozenset({ROLLED_BACK, FAILED})
PROGRESSING, PAUSED, HALTED, COMPLETE = "Progressing", "Paused", "Halted", "Complete"


@dataclass(frozen=True)
class PlanSpec:
    version: str
    max_unavailable: int = 1
    canary: int = 0
    pause_seconds: float = 0.0
    drain: bool = False
    failure_threshold: int = 1
    progress_deadline_seconds: float = 600.0

    @classmethod
    def from_spec(cls, spec: Mapping[str, object], node_count: int) -> PlanSpec:
        """The spec of an UpdatePlan object; ``maxUnavailable`` may be a count or ``"N%"``."""
        raw = spec.get("maxUnavailable", 1)
        if isinstance(raw, str) and raw.endswith("%"):
            unavailable = math.floor(node_count * int(raw[:-1]) / 100)
        else:
            unavailable = int(str(raw))
        return cls(
            version=str(spec["version"]),
            max_unavailable=max(1, unavailable),
            canary=int(str(spec.get("canary", 0))),
            pause_seconds=float(str(spec.get("pauseSeconds", 0))),
            drain=bool(spec.get("drain", False)),
            failure_threshold=max(1, int(str(spec.get("failureThreshold", 1)))),
            progress_deadline_seconds=float(str(spec.get("progressDeadlineSeconds", 600))),
        )


@dataclass(frozen=True)
class NodeState:
    phase: str = PENDING
    since: float = 0.0  # when the node entered the phase (seconds, the controller's clock)


@dataclass
class Decision:
    phase: str
    start: list[str] = field(default_factory=list)
    uncordon: list[str] = field(default_factory=list)
    wait_seconds: float | None = None  # when Paused: until the next batch may start
    batch: int = 0  # the batch now running or next (0 is the canaries when there are any)
    counts: dict[str, int] = field(default_factory=dict)
    stalled: list[str] = field(default_factory=list)  # in flight past the deadline: now Failed
    deadline_seconds: float | None = None  # until the next in-flight node's deadline


def batches(nodes: Sequence[str], spec: PlanSpec) -> list[list[str]]:
    ordered = sorted(nodes)
    groups = [ordered[: spec.canary]] if spec.canary else []
    rest = ordered[spec.canary :]
    size = spec.max_unavailable
    groups += [rest[i : i + size] for i in range(0, len(rest), size)]
    return [g for g in groups if g]


def step(
    spec: PlanSpec, nodes: Sequence[str], states: Mapping[str, NodeState], now: float
) -> Decision:
    """What the controller does now for a plan over ``nodes``."""
    decision = _step(spec, nodes, _with_deadlines(spec, nodes, states, now), now)
    decision.stalled = [n for n in sorted(nodes) if _stalled(spec, states.get(n, NodeState()), now)]
    left = [
        spec.progress_deadline_seconds - (now - states[n].since)
        for n in nodes
        if n in states and states[n].phase in IN_FLIGHT and n not in decision.stalled
    ]
    decision.deadline_seconds = max(0.0, min(left)) if left else None
    return decision


def _stalled(spec: PlanSpec, state: NodeState, now: float) -> bool:
    return state.phase in IN_FLIGHT and now - state.since >= spec.progress_deadline_seconds


def _with_deadlines(
    spec: PlanSpec, nodes: Sequence[str], states: Mapping[str, NodeState], now: float
) -> dict[str, NodeState]:
    """The nodes' states with those past the progress deadline counted as Failed."""
    state = {n: states.get(n, NodeState()) for n in nodes}
    return {n: NodeState(FAILED, now) if _stalled(spec, s, now) else s for n, s in state.items()}


def _step(
    spec: PlanSpec, nodes: Sequence[str], state: Mapping[str, NodeState], now: float
) -> Decision:
    counts = {p: sum(1 for s in state.values() if s.phase == p) for p in NODE_PHASES}
    failures = sum(counts[p] for p in FAILURES)
    in_flight = sum(counts[p] for p in IN_FLIGHT)
    # Nodes drained for the update are uncordoned once Healthy (the controller does it once).
    uncordon = [n for n in sorted(nodes) if spec.drain and state[n].phase == HEALTHY]
    if not nodes:  # none selected (yet): nodes that join with the labels are taken then
        return Decision(PROGRESSING, counts=counts)
    if failures >= spec.failure_threshold:
        return Decision(HALTED, uncordon=uncordon, counts=counts)
    if counts[HEALTHY] == len(nodes):
        return Decision(COMPLETE, uncordon=uncordon, counts=counts)
    groups = batches(nodes, spec)
    previous_done = 0.0
    for number, group in enumerate(groups):
        phases = [state[n].phase for n in group]
        if all(p == HEALTHY for p in phases):
            previous_done = max(state[n].since for n in group)
            continue
        if any(p in FAILURES for p in phases) and all(
            p == HEALTHY or p in FAILURES for p in phases
        ):
            # Failures below the threshold: the batch is over; its failed nodes stay as they are.
            previous_done = max(state[n].since for n in group)
            continue
        pending = [n for n in group if state[n].phase == PENDING]
        started_any = len(pending) < len(group)
        if not started_any and now < previous_done + spec.pause_seconds:
            wait = previous_done + spec.pause_seconds - now
            return Decision(PAUSED, uncordon=uncordon, wait_seconds=wait, batch=number,
                            counts=counts)  # fmt: skip
        room = max(0, spec.max_unavailable - in_flight)
        return Decision(PROGRESSING, start=pending[:room], uncordon=uncordon, batch=number,
                        counts=counts)  # fmt: skip
    # Every batch is over, with fewer failures than the threshold: done (the counts say which).
    return Decision(COMPLETE, uncordon=uncordon, counts=counts)
