"""The scheduler: binds each pending pod to the best Ready, schedulable node that fits it.

Pods and nodes come from informers. Pending pods wait in a work queue and are placed one at a
time (the decision is sequential, as kube-scheduler's is; the binding POSTs run concurrently,
and the pods waiting at once are placed in one turn of the event loop so that their bindings
reach the datastore together):
filter the nodes (stopping once kube-scheduler's adaptive share of them fits), score the
feasible ones, pick the best (ties at random), *assume* the pod on that node so the next
decision sees its resources taken, then bind through the ``binding`` subresource and record a
``Scheduled`` Event. A pod that fits nowhere gets ``PodScheduled=False`` (``Unschedulable``) and
a ``FailedScheduling`` Event in kube-scheduler's words, and waits — without polling — until a
node is added or changes, or a placed pod goes away; then it is retried after its back-off.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, Clock, Informer, KubeApi, ShutDown, WorkQueue
from k3py.cluster.client.events import EventRecorder, timestamp
from k3py.cluster.server.metrics.observer import ControlPlaneObserver, NullObserver
from k3py.cluster.server.scheduler.predicates import (
    NodeInfo,
    PodFacts,
    check_node,
    failure_message,
    node_ready,
    nodes_to_find,
    pod_key,
    score_nodes,
)
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.scheduler")

Object = dict[str, Any]
PODS = by_kind("v1", "Pod")
DEFAULT_SCHEDULER = "default-scheduler"


@dataclass(frozen=True)
class SchedulerSettings:
    name: str = DEFAULT_SCHEDULER
    bind_concurrency: int = 64
    # Pods placed in one turn of the event loop, whose binds then share store hand-overs.
    bind_batch: int = 64
    batch_seconds: float = 0.02
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    # kube-scheduler's podMaxInUnschedulablePodsDuration: a safety net, not the retry path.
    unschedulable_flush: float = 300.0


def is_terminal(pod: Object) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _relevant_node_state(node: Object) -> Any:
    """What of a node can make an unschedulable pod fit (heartbeats are not)."""
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    return (
        node["metadata"].get("labels"),
        spec.get("taints"),
        spec.get("unschedulable"),
        status.get("allocatable"),
        node_ready(node),
    )


class Scheduler:
    def __init__(
        self,
        api: KubeApi,
        pods: Informer,
        nodes: Informer,
        recorder: EventRecorder,
        clock: Clock,
        settings: SchedulerSettings | None = None,
        rng: random.Random | None = None,
        observer: ControlPlaneObserver | None = None,
    ) -> None:
        self.api = api
        self.observer: ControlPlaneObserver = observer or NullObserver()
        self.pods = pods
        self.nodes = nodes
        self.recorder = recorder
        self.clock = clock
        self.settings = settings or SchedulerSettings()
        self.rng = rng or random.Random()  # noqa: S311 - tie-breaking, not security
        self.queue: WorkQueue[str] = WorkQueue(clock)
        self.infos: dict[str, NodeInfo] = {}
        self.assumed: dict[str, str] = {}
        self.unschedulable: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.scheduled = 0
        self._next_start = 0
        self._binds = asyncio.Semaphore(self.settings.bind_concurrency)
        self._bind_tasks: set[asyncio.Task[None]] = set()
        pods.add_index("node", lambda p: [(p.get("spec") or {}).get("nodeName") or ""])
        nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)

    # -- which pods are ours -------------------------------------------------------------------

    def wants(self, pod: Object) -> bool:
        spec = pod.get("spec") or {}
        return (
            not spec.get("nodeName")
            and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == self.settings.name
            and not pod["metadata"].get("deletionTimestamp")
            and not is_terminal(pod)
        )

    # -- informer handlers ---------------------------------------------------------------------

    def _node_added(self, node: Object) -> None:
        info = NodeInfo(node)
        for pod in self.pods.by_index("node", info.name):
            if not is_terminal(pod):
                info.add_pod(pod)
        for key, name in self.assumed.items():
            if name == info.name:
                assumed = self.pods.get_by_key(key)
                if assumed is not None:
                    info.add_pod(_placed(assumed, name))
        self.infos[info.name] = info
        self.move_all_to_active()

    def _node_updated(self, old: Object, new: Object) -> None:
        info = self.infos.get(new["metadata"]["name"])
        if info is None:
            self._node_added(new)
            return
        info.set_node(new)
        if _relevant_node_state(old) != _relevant_node_state(new):
            self.move_all_to_active()

    def _node_deleted(self, node: Object) -> None:
        self.infos.pop(node["metadata"]["name"], None)

    def _pod_added(self, pod: Object) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            self._place(pod)
        elif self.wants(pod):
            self.queue.add(pod_key(pod))

    def _pod_updated(self, old: Object, new: Object) -> None:
        key = pod_key(new)
        node = (new.get("spec") or {}).get("nodeName")
        if node:
            was_running = not is_terminal(old) and (old.get("spec") or {}).get("nodeName")
            self._place(new)
            if was_running and is_terminal(new):
                self.move_all_to_active()  # its resources are free now
            return
        if key in self.assumed or not self.wants(new):
            return
        changed = (old.get("spec"), old["metadata"].get("labels")) != (
            new.get("spec"),
            new["metadata"].get("labels"),
        )
        if changed:
            self.unschedulable.pop(key, None)
            self.queue.add(key)

    def _pod_deleted(self, pod: Object) -> None:
        key = pod_key(pod)
        self.unschedulable.pop(key, None)
        self.attempts.pop(key, None)
        node = (pod.get("spec") or {}).get("nodeName") or self.assumed.pop(key, None)
        info = self.infos.get(node or "")
        if info is not None and key in info.pods:
            info.remove_pod(pod)
            self.move_all_to_active()

    def _place(self, pod: Object) -> None:
        key = pod_key(pod)
        node = pod["spec"]["nodeName"]
        assumed_on = self.assumed.pop(key, None)
        if assumed_on and assumed_on != node and assumed_on in self.infos:
            self.infos[assumed_on].remove_pod(pod)
        self.unschedulable.pop(key, None)
        info = self.infos.get(node)
        if info is None:
            return
        if is_terminal(pod):
            info.remove_pod(pod)
        else:
            info.add_pod(pod)

    def move_all_to_active(self) -> None:
        """Something changed that may let waiting pods fit: retry them after their back-off."""
        for key in list(self.unschedulable):
            self.queue.add_after(key, self._backoff(key))
        self.unschedulable.clear()

    def _backoff(self, key: str) -> float:
        attempts = self.attempts.get(key, 0)
        if attempts == 0:
            return 0.0
        return min(
            self.settings.initial_backoff * float(1 << min(attempts - 1, 20)),
            self.settings.max_backoff,
        )

    # -- the scheduling loop ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.pods.synced.wait()
        await self.nodes.synced.wait()
        flusher = asyncio.create_task(self._flush_unschedulable())
        try:
            while True:
                try:
                    key = await self.queue.get()
                except ShutDown:
                    return
                self._attempt(key)
                # The pods waiting now are placed in the same turn of the event loop (up to a
                # count and a time, so that watch events still come through): their binds then
                # start together and reach the datastore as one read hand-over and one write
                # transaction instead of one of each per pod.
                placed, turn_ends = 1, self.clock.monotonic() + self.settings.batch_seconds
                while (
                    self.queue
                    and placed < self.settings.bind_batch
                    and self.clock.monotonic() < turn_ends
                ):
                    try:
                        key = await self.queue.get()  # does not suspend: a key is waiting
                    except ShutDown:
                        return
                    self._attempt(key)
                    placed += 1
                await asyncio.sleep(0)  # let binds and watch events through
        finally:
            await cancel_and_wait(flusher)
            for task in list(self._bind_tasks):
                task.cancel()
            await asyncio.gather(*self._bind_tasks, return_exceptions=True)
            await self.queue.shut_down()

    def _attempt(self, key: str) -> None:
        started = self.clock.monotonic()
        try:
            pod = self.pods.get_by_key(key)
            if pod is not None and self.wants(pod) and key not in self.assumed:
                self.schedule_one(pod)
                result = "scheduled" if key in self.assumed else "unschedulable"
                self.observer.schedule_attempt(result, self.clock.monotonic() - started)
        except Exception:
            logger.exception("scheduling failed", extra={"fields": {"pod": key}})
            self.observer.schedule_attempt("error", self.clock.monotonic() - started)
        finally:
            self.queue.done(key)

    async def _flush_unschedulable(self) -> None:
        period = self.settings.unschedulable_flush
        while True:
            await self.clock.sleep(period / 10)
            now = self.clock.monotonic()
            for key, since in list(self.unschedulable.items()):
                if now - since >= period:
                    del self.unschedulable[key]
                    self.queue.add(key)

    def find_nodes(self, pod: Object) -> tuple[list[NodeInfo], Counter[str]]:
        """Feasible nodes (up to the adaptive share) and the failure reasons counted per node."""
        infos = list(self.infos.values())
        total = len(infos)
        reasons: Counter[str] = Counter()
        feasible: list[NodeInfo] = []
        if total == 0:
            return feasible, reasons
        wanted = nodes_to_find(total)
        facts = PodFacts.of(pod)
        # Most pods ask for nothing but resources and most nodes have no taints: for those the
        # filters come down to three sums, checked here without the call (the hot path). A
        # node that fails them still goes through check_node for the reasons.
        plain = not (facts.tolerations or facts.node_name or facts.needs_affinity or facts.ports)
        cpu, memory = facts.requests.milli_cpu, facts.requests.memory
        start = self._next_start % total
        processed = 0
        for offset in range(total):
            info = infos[(start + offset) % total]
            processed += 1
            if plain and not info.unschedulable and not info.taints:
                used, alloc = info.requested, info.allocatable
                if (
                    used.pods < alloc.pods
                    and (not cpu or used.milli_cpu + cpu <= alloc.milli_cpu)
                    and (not memory or used.memory + memory <= alloc.memory)
                ):
                    feasible.append(info)
                    if len(feasible) >= wanted:
                        break
                    continue
            why = check_node(facts, info)
            if why:
                reasons.update(why)
            else:
                feasible.append(info)
                if len(feasible) >= wanted:
                    break
        self._next_start = (start + processed) % total
        return feasible, reasons

    def select(self, pod: Object, feasible: list[NodeInfo]) -> NodeInfo:
        if len(feasible) == 1:
            return feasible[0]
        scores = score_nodes(pod, feasible)
        best = max(scores)
        ties = [info for info, score in zip(feasible, scores, strict=True) if score == best]
        return ties[0] if len(ties) == 1 else self.rng.choice(ties)

    def schedule_one(self, pod: Object) -> None:
        key = pod_key(pod)
        feasible, reasons = self.find_nodes(pod)
        if not feasible:
            self._unschedulable(pod, failure_message(len(self.infos), reasons))
            return
        info = self.select(pod, feasible)
        self.assumed[key] = info.name
        info.add_pod(_placed(pod, info.name))
        task = asyncio.create_task(self._bind(pod, info.name))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)

    def _unschedulable(self, pod: Object, message: str) -> None:
        key = pod_key(pod)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.unschedulable[key] = self.clock.monotonic()
        self.recorder.event(pod, "Warning", "FailedScheduling", message)
        current = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == "PodScheduled"
            ),
            None,
        )
        if current and current.get("status") == "False" and current.get("message") == message:
            return
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": timestamp(self.clock),
        }
        task = asyncio.create_task(self._patch_condition(pod, condition))
        self._bind_tasks.add(task)
        task.add_done_callback(self._bind_tasks.discard)

    async def _patch_condition(self, pod: Object, condition: Object) -> None:
        assert PODS is not None
        meta = pod["metadata"]
        patch = {"status": {"conditions": [condition]}}
        try:
            await self.api.patch(
                PODS,
                meta["name"],
                patch,
                meta["namespace"],
                patch_type="strategic",
                subresource="status",
            )
        except (ApiError, ClientError) as err:
            logger.debug("pod condition not written", extra={"fields": {"error": str(err)}})

    async def _bind(self, pod: Object, node: str) -> None:
        assert PODS is not None
        meta = pod["metadata"]
        key = pod_key(pod)
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        async with self._binds:
            try:
                await self.api.create(PODS, binding, meta["namespace"], subresource="binding")
            except (ApiError, ClientError) as err:
                self._forget(pod, node)
                if isinstance(err, ApiError) and err.code in (404, 409):
                    return  # gone, or placed by someone else: the watch tells the rest
                logger.warning(
                    "binding failed; will retry",
                    extra={"fields": {"pod": key, "node": node, "error": str(err)}},
                )
                self.attempts[key] = self.attempts.get(key, 0) + 1
                self.queue.add_after(key, self._backoff(key))
                return
        self.scheduled += 1
        self.attempts.pop(key, None)
        self.recorder.event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
        )

    def _forget(self, pod: Object, node: str) -> None:
        key = pod_key(pod)
        if self.assumed.get(key) == node:
            del self.assumed[key]
            info = self.infos.get(node)
            if info is not None:
                info.remove_pod(pod)


def _placed(pod: Object, node: str) -> Object:
    return {**pod, "spec": {**(pod.get("spec") or {}), "nodeName": node}}
