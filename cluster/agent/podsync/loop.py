"""The pod sync loop: one worker per pod bound to this node, fed by the pods' source.

:class:`PodSync` receives the desired pods (from the API's watch, or from the local store
while offline) through :meth:`PodSync.apply`, :meth:`PodSync.forget` and
:meth:`PodSync.replace_all`, and keeps one :class:`PodWorker` task per pod. It also listens to
the runtime's container events to wake the worker of the pod a container belongs to (a process
that exits is restarted at once, not at the next resync), and removes containers that carry
this node's label but belong to no desired pod: the garbage of pods deleted while the agent was
away. That sweep only runs once the desired set is known (:meth:`replace_all`), so an agent
that starts offline never removes the containers it is about to adopt.
"""

from __future__ import annotations

import asyncio
import logging

from k3py.cluster.agent.errors import RuntimeUnavailable
from k3py.cluster.agent.podsync.spec import Pod, meta, pod_key
from k3py.cluster.agent.podsync.worker import PodWorker, WorkerDeps
from k3py.cluster.agent.runtime import LABEL_MANAGED, LABEL_NODE
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.podsync")

ORPHAN_GRACE = 2.0
SWEEP_SECONDS = 60.0
_WAKE_ACTIONS = frozenset({"start", "die", "oom", "destroy", "stop", "kill"})
_EXIT_ACTIONS = frozenset({"die", "oom", "kill", "stop"})
RELOOK_SECONDS = 0.5


class PodSync:
    def __init__(self, deps: WorkerDeps) -> None:
        self._deps = deps
        self._workers: dict[str, tuple[PodWorker, asyncio.Task[None]]] = {}
        self._known = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- desired state ----------------------------------------------------------------------

    @property
    def pods(self) -> dict[str, Pod]:
        return {uid: worker.pod for uid, (worker, _) in self._workers.items()}

    def worker(self, uid: str) -> PodWorker | None:
        entry = self._workers.get(uid)
        return entry[0] if entry else None

    def apply(self, pod: Pod) -> None:
        """A pod bound to this node was added or changed."""
        uid = str(meta(pod).get("uid", ""))
        if not uid:
            return
        entry = self._workers.get(uid)
        if entry is not None and not entry[1].done():
            entry[0].update(pod)
            return
        worker = PodWorker(pod, self._deps)
        task = asyncio.create_task(worker.run(), name=f"pod-{pod_key(pod)}")
        self._workers[uid] = (worker, task)
        task.add_done_callback(lambda _: self._finished(uid, worker))

    def _finished(self, uid: str, worker: PodWorker) -> None:
        entry = self._workers.get(uid)
        if entry is not None and entry[0] is worker:
            del self._workers[uid]

    def forget(self, uid: str) -> None:
        """A pod is no longer bound to this node (deleted on the server)."""
        entry = self._workers.get(uid)
        if entry is not None:
            entry[0].remove()

    def replace_all(self, pods: list[Pod]) -> None:
        """The complete set of desired pods (after a list): forget the others."""
        wanted = {str(meta(p).get("uid", "")) for p in pods}
        for uid in list(self._workers):
            if uid not in wanted:
                self.forget(uid)
        for pod in pods:
            self.apply(pod)
        self._known.set()

    def wake_all(self) -> None:
        for worker, _ in self._workers.values():
            worker.wake()

    # -- background -------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch_events(), name="podsync-events"),
            asyncio.create_task(self._sweep_loop(), name="podsync-sweep"),
        ]

    async def stop(self) -> None:
        """Stop the workers (containers keep running: the agent may be restarting)."""
        tasks = [*self._tasks, *(task for _, task in self._workers.values())]
        await cancel_and_wait(*tasks, log=logger)
        self._workers.clear()

    async def _watch_events(self) -> None:
        labels = {LABEL_NODE: self._deps.node.node_name}
        loop = asyncio.get_running_loop()
        while True:
            try:
                async for event in self._deps.runtime.events(labels):
                    if event.action not in _WAKE_ACTIONS:
                        continue
                    worker = self.worker(event.labels.get("io.kubernetes.pod.uid", ""))
                    if worker is not None:
                        worker.wake()
                        if event.action in _EXIT_ACTIONS:
                            # Docker reports a death before its container list shows it: look
                            # again shortly, or the exit would wait for the next resync.
                            loop.call_later(RELOOK_SECONDS, worker.wake)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                logger.debug("runtime events ended", extra={"fields": {"error": str(err)}})
            # The stream ended or the engine restarted: resync everything, then listen again.
            self.wake_all()
            await self._deps.clock.sleep(2.0)

    async def _sweep_loop(self) -> None:
        await self._known.wait()
        while True:
            try:
                await self.sweep()
            except RuntimeUnavailable as err:
                logger.warning("container sweep failed", extra={"fields": {"error": str(err)}})
            await self._deps.clock.sleep(SWEEP_SECONDS)

    async def sweep(self) -> int:
        """Remove this node's containers that belong to no desired pod; returns how many."""
        runtime = self._deps.runtime
        labels = {LABEL_MANAGED: "true", LABEL_NODE: self._deps.node.node_name}
        removed = 0
        for info in await runtime.list_containers(labels):
            if info.pod_uid in self._workers:
                continue
            if info.status == "running":
                await runtime.stop_container(info.id, ORPHAN_GRACE)
            await runtime.remove_container(info.id)
            removed += 1
        for uid in self._deps.volumes.known_uids():
            if uid not in self._workers:
                self._deps.volumes.remove(uid)
        if removed:
            logger.info("removed containers of deleted pods", extra={"fields": {"count": removed}})
        return removed
