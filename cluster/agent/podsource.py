"""The pods' source and sink: the API when it answers, the local store when it does not.

:class:`ClusterPods` watches the pods bound to this node (``fieldSelector=spec.nodeName=…``)
and reads, one object each, the ConfigMaps and Secrets those pods use
(:class:`~k3py.cluster.agent.referenced.ReferencedObjects`: the server's Node authorizer lets a
node read only those), hands pods to the pod sync loop, and keeps the local store current
(pods, and the ConfigMaps and Secrets they use). It is also the pod workers'
:class:`~k3py.cluster.agent.podsync.worker.PodHost`: ConfigMaps and Secrets come as last read,
falling back to the store before their first read; Events go through
an :class:`~k3py.cluster.client.EventRecorder`; statuses are written as merge patches of
``pods/<name>/status``, and a status that cannot be written (server unreachable) waits and is
written when the server is back. A ConfigMap or Secret that changes wakes the pods using it,
so their volumes follow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from k3py.cluster.agent.autonomy.store import LocalStore, references
from k3py.cluster.agent.podsync.loop import PodSync
from k3py.cluster.agent.podsync.spec import Pod, meta
from k3py.cluster.agent.referenced import Reference, ReferencedObjects
from k3py.cluster.agent.satokens import PodTokens
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, Clock, EventRecorder, Informer, KubeApi
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.pods")

PODS = by_kind("v1", "Pod")
RETRY_SECONDS = 5.0


class StoreObjects:
    """ConfigMaps and Secrets as last read from the server, else from the local store."""

    def __init__(self, pods: ClusterPods) -> None:
        self._pods = pods

    def _get(self, kind: str, namespace: str, name: str) -> Any:
        followed = self._pods.objects_followed
        if followed.fetched((kind, namespace, name)):
            return followed.get((kind, namespace, name))
        return self._pods.store.get_object(kind, namespace, name)

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._get("configmaps", namespace, name)
        return found

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._get("secrets", namespace, name)
        return found

    def service_account_token(self, pod: dict[str, Any], source: dict[str, Any]) -> str | None:
        return self._pods.tokens.token(pod, source)


class ClusterPods:
    def __init__(
        self, api: KubeApi, store: LocalStore, clock: Clock, node_name: str, recorder: EventRecorder
    ) -> None:
        self.api = api
        self.store = store
        self.clock = clock
        self.node_name = node_name
        self.recorder = recorder
        self.sync: PodSync | None = None
        self.pods: Informer | None = None
        self.objects_followed = ReferencedObjects(api, self._object_changed)
        self.tokens = PodTokens(api, self._token_changed)
        self._objects = StoreObjects(self)
        self._pending: dict[str, tuple[Pod, dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []

    # -- PodHost ----------------------------------------------------------------------------

    @property
    def objects(self) -> StoreObjects:
        return self._objects

    def event(self, pod: Pod, kind: str, reason: str, message: str) -> None:
        self.recorder.event(pod, kind, reason, message)

    async def report_status(self, pod: Pod, status: dict[str, Any]) -> None:
        uid = str(meta(pod).get("uid", ""))
        self.store.save_pod({**pod, "status": status})
        self._pending[uid] = (pod, status)
        await self._write_status(uid)

    async def _write_status(self, uid: str) -> bool:
        assert PODS is not None
        entry = self._pending.get(uid)
        if entry is None:
            return True
        pod, status = entry
        old = pod.get("status") or {}
        # A merge patch keeps keys it does not mention: clear what the new status dropped.
        body = {**status, **{k: None for k in old if k not in status}}
        patch = {"metadata": {"uid": meta(pod).get("uid")}, "status": body}
        try:
            await self.api.patch(
                PODS,
                str(meta(pod).get("name")),
                patch,
                str(meta(pod).get("namespace")),
                subresource="status",
            )
        except ApiError as err:
            if 400 <= err.code < 500 and err.code != 429:
                # Gone (404), replaced by a pod of the same name (409), or refused for good:
                # retrying the same write cannot help; the next change writes afresh.
                if err.code not in (404, 409):
                    logger.warning("pod status refused", extra={"fields": {"error": str(err)}})
                self._pending.pop(uid, None)
                return True
            return False
        except ClientError:
            return False
        if self._pending.get(uid) is entry:
            del self._pending[uid]
        return True

    async def finish_deletion(self, pod: Pod) -> None:
        assert PODS is not None
        uid = str(meta(pod).get("uid", ""))
        self._pending.pop(uid, None)
        self.store.delete_pod(uid)
        try:
            await self.api.delete(
                PODS,
                str(meta(pod).get("name")),
                str(meta(pod).get("namespace")),
                grace_period_seconds=0,
                preconditions={"uid": uid},
            )
        except ApiError as err:
            if err.code not in (404, 409):
                raise

    # -- informers --------------------------------------------------------------------------

    def start(self, sync: PodSync) -> None:
        assert PODS is not None
        self.sync = sync
        stored = self.store.pods()
        if stored:
            # Autonomy: run what the node ran before, without waiting for the server.
            logger.info("pods from the local store", extra={"fields": {"count": len(stored)}})
            sync.replace_all(stored)
            self._follow_references()
        self.pods = Informer(
            self.api, PODS, field_selector=f"spec.nodeName={self.node_name}", clock=self.clock
        )
        self.pods.add_handler(
            on_add=self._pod_changed,
            on_update=lambda _, pod: self._pod_changed(pod),
            on_delete=self._pod_deleted,
        )
        self._tasks.append(self.pods.start())
        self.objects_followed.start()
        self.tokens.start()
        self._tasks.append(asyncio.create_task(self._after_first_list(), name="pods-synced"))
        self._tasks.append(asyncio.create_task(self._flush_statuses(), name="pod-statuses"))

    async def stop(self) -> None:
        if self.pods is not None:
            await self.pods.stop()
        await self.objects_followed.stop()
        await self.tokens.stop()
        await cancel_and_wait(*self._tasks, log=logger)

    async def _after_first_list(self) -> None:
        assert self.pods is not None
        assert self.sync is not None
        await self.pods.synced.wait()
        # The server's list is the truth now: pods deleted while away go, the rest stay.
        self.sync.replace_all(self.pods.list())
        self._prune_store()

    def _prune_store(self) -> None:
        assert self.pods is not None
        wanted: set[tuple[str, str, str]] = set()
        live = {str(meta(p).get("uid", "")) for p in self.pods.list()}
        for pod in self.store.pods():
            if str(meta(pod).get("uid", "")) not in live:
                self.store.delete_pod(str(meta(pod).get("uid", "")))
            else:
                wanted |= references(pod)
        self.store.prune_objects(wanted)

    async def _flush_statuses(self) -> None:
        while True:
            await self.clock.sleep(RETRY_SECONDS)
            for uid in list(self._pending):
                if not await self._write_status(uid):
                    break

    def _pod_changed(self, pod: Pod) -> None:
        if self.sync is None:
            return
        uid = str(meta(pod).get("uid", ""))
        pending = self._pending.get(uid)
        if pending is not None:
            # Our newer status has not reached the server yet: keep it over the server's copy.
            pod = {**pod, "status": pending[1]}
        self.store.save_pod(pod)
        for key in references(pod):
            obj = self.objects_followed.get(key)
            if obj is not None:
                self.store.save_object(key[0], obj)
        self.sync.apply(pod)
        self._follow_references()

    def _pod_deleted(self, pod: Pod) -> None:
        uid = str(meta(pod).get("uid", ""))
        self.store.delete_pod(uid)
        self._pending.pop(uid, None)
        if self.sync is not None:
            self.sync.forget(uid)
            self._follow_references()

    def _follow_references(self) -> None:
        if self.sync is None:
            return
        wanted: set[Reference] = set()
        for pod in self.sync.pods.values():
            wanted |= references(pod)
        self.objects_followed.follow(wanted)
        self.tokens.follow(self.sync.pods.values())

    def _token_changed(self, uid: str) -> None:
        worker = self.sync.worker(uid) if self.sync is not None else None
        if worker is not None:
            worker.wake()

    def _object_changed(self, kind: str, obj: dict[str, Any]) -> None:
        if self.sync is None:
            return
        key = (kind, str(meta(obj).get("namespace", "")), str(meta(obj).get("name", "")))
        for uid, pod in self.sync.pods.items():
            if key in references(pod):
                self.store.save_object(kind, obj)
                worker = self.sync.worker(uid)
                if worker is not None:
                    worker.wake()
