"""An UpdatePlan's rollout: batches, maxUnavailable, canaries, pauses and the halt."""

from __future__ import annotations

import random

import pytest

from k3py.cluster.ota import rollout
from k3py.cluster.ota.rollout import (
    FAILED,
    HEALTHY,
    IN_FLIGHT,
    PENDING,
    ROLLED_BACK,
    NodeState,
    PlanSpec,
    step,
)

NODES = [f"node{i}" for i in range(1, 6)]
PATH = ["Downloading", "Verifying", "Installing", "Rebooting", HEALTHY]


def test_canaries_first_then_batches_of_max_unavailable() -> None:
    spec = PlanSpec("0.2.0", max_unavailable=2, canary=1)
    assert rollout.batches(list(reversed(NODES)), spec) == [
        ["node1"], ["node2", "node3"], ["node4", "node5"]
    ]  # fmt: skip


def test_max_unavailable_as_a_percentage() -> None:
    spec = {"version": "0.2.0", "maxUnavailable": "40%", "canary": 1}
    assert PlanSpec.from_spec(spec, 5).max_unavailable == 2
    assert PlanSpec.from_spec({"version": "1", "maxUnavailable": "10%"}, 5).max_unavailable == 1


def _simulate(spec: PlanSpec, fail: set[str], seed: int) -> tuple[str, int, list[str]]:
    """Agents advance one phase at random instants; the most nodes ever in flight."""
    rng = random.Random(seed)
    states = {n: NodeState() for n in NODES}
    now, most, started = 0.0, 0, []
    for _ in range(500):
        decision = step(spec, NODES, states, now)
        for name in decision.start:
            states[name] = NodeState("Downloading", now)
            started.append(name)
        most = max(most, sum(1 for s in states.values() if s.phase in IN_FLIGHT))
        if decision.phase in (rollout.COMPLETE, rollout.HALTED) and not any(
            s.phase in IN_FLIGHT for s in states.values()
        ):
            return decision.phase, most, started
        now += 1.0
        moving = [n for n, s in states.items() if s.phase in IN_FLIGHT]
        if moving:
            name = rng.choice(moving)
            phase = states[name].phase
            following = PATH[PATH.index(phase) + 1]
            if name in fail and following == "Rebooting":
                following = ROLLED_BACK
            states[name] = NodeState(following, now)
    raise AssertionError("the rollout never ended")


@pytest.mark.parametrize("seed", range(20))
def test_max_unavailable_one_never_has_two_nodes_updating(seed: int) -> None:
    phase, most, started = _simulate(PlanSpec("0.2.0", max_unavailable=1), set(), seed)
    assert phase == rollout.COMPLETE
    assert most == 1
    assert started == NODES


def test_a_wider_window_is_used_but_never_exceeded() -> None:
    for seed in range(10):
        _, most, _ = _simulate(PlanSpec("0.2.0", max_unavailable=2), set(), seed)
        assert most == 2


def test_only_the_canaries_start_until_they_are_healthy() -> None:
    spec = PlanSpec("0.2.0", max_unavailable=3, canary=2)
    first = step(spec, NODES, {}, 0.0)
    assert first.start == ["node1", "node2"]
    running = {"node1": NodeState(HEALTHY, 5.0), "node2": NodeState("Installing", 1.0)}
    assert step(spec, NODES, running, 6.0).start == []
    running["node2"] = NodeState(HEALTHY, 7.0)
    assert step(spec, NODES, running, 8.0).start == ["node3", "node4", "node5"]


def test_a_failed_canary_halts_the_plan() -> None:
    spec = PlanSpec("0.2.0", max_unavailable=3, canary=1)
    decision = step(spec, NODES, {"node1": NodeState(ROLLED_BACK, 3.0)}, 4.0)
    assert decision.phase == rollout.HALTED
    assert decision.start == []


def test_the_next_batch_waits_for_the_pause() -> None:
    spec = PlanSpec("0.2.0", max_unavailable=2, pause_seconds=30)
    states = {"node1": NodeState(HEALTHY, 8.0), "node2": NodeState(HEALTHY, 10.0)}
    paused = step(spec, NODES, states, 20.0)
    assert paused.phase == rollout.PAUSED
    assert paused.wait_seconds == pytest.approx(20.0)
    assert paused.start == []
    assert step(spec, NODES, states, 40.0).start == ["node3", "node4"]


def test_the_failure_threshold_halts_the_rollout() -> None:
    spec = PlanSpec("0.2.0", max_unavailable=1, failure_threshold=2)
    states = {"node1": NodeState(FAILED, 1.0)}
    go_on = step(spec, NODES, states, 2.0)
    assert go_on.phase == rollout.PROGRESSING  # one failure is below the threshold
    assert go_on.start == ["node2"]
    states["node2"] = NodeState(ROLLED_BACK, 3.0)
    halted = step(spec, NODES, states, 4.0)
    assert halted.phase == rollout.HALTED
    assert halted.start == []
    assert halted.counts[PENDING] == 3


def test_drained_nodes_are_uncordoned_once_healthy() -> None:
    spec = PlanSpec("0.2.0", drain=True)
    decision = step(spec, NODES, {"node1": NodeState(HEALTHY, 1.0)}, 2.0)
    assert decision.uncordon == ["node1"]
    assert decision.start == ["node2"]


def test_a_node_that_reports_no_progress_fails_at_the_deadline_and_frees_its_place() -> None:
    # A node whose agent cannot update (not under the launcher) never leaves Downloading.
    spec = PlanSpec("0.2.0", max_unavailable=1, failure_threshold=2, progress_deadline_seconds=60)
    states = {"node1": NodeState("Downloading", 100.0)}
    waiting = step(spec, NODES, states, 130.0)
    assert waiting.stalled == []
    assert waiting.start == []
    assert waiting.deadline_seconds == pytest.approx(30.0)
    stalled = step(spec, NODES, states, 160.0)
    assert stalled.stalled == ["node1"]
    assert stalled.counts[FAILED] == 1
    assert stalled.start == ["node2"]  # below the threshold: the next node takes the place


def test_progress_resets_the_deadline_and_stalls_count_toward_the_halt() -> None:
    spec = PlanSpec("0.2.0", max_unavailable=2, progress_deadline_seconds=60)
    states = {"node1": NodeState("Installing", 150.0), "node2": NodeState("Rebooting", 100.0)}
    decision = step(spec, NODES, states, 170.0)
    assert decision.stalled == ["node2"]  # node1 moved on at 150 s: 40 s left
    assert decision.phase == rollout.HALTED  # failureThreshold 1
    assert decision.start == []


def test_progress_deadline_from_the_spec() -> None:
    spec = PlanSpec.from_spec({"version": "0.2.0", "progressDeadlineSeconds": 1800}, 5)
    assert spec.progress_deadline_seconds == 1800
    assert PlanSpec.from_spec({"version": "0.2.0"}, 5).progress_deadline_seconds == 600
