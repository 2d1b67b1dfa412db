"""The ConfigMaps and Secrets this node's pods use, fetched one by one and kept fresh.

The server's Node authorizer lets a node read only the objects its pods refer to, one at a
time, so the agent cannot watch them all with one list and watch. A watch per object would
hold a connection each (a board keeps only a few), so :class:`ReferencedObjects` does what the
kubelet's ``Cache`` strategy does: it GETs an object as soon as a pod needs it and re-reads
every object in use each :attr:`refresh_seconds` (longer when a node uses many, so that it
sends at most two reads a second), telling its owner about every change.
Objects no pod uses any more are forgotten. While the server is unreachable it waits and
retries; the pods keep running from the local store meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from k3py.cluster.agent.following import Following
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, KubeApi

logger = logging.getLogger("k3py.agent.objects")

Object = dict[str, Any]
Reference = tuple[str, str, str]  # (kind plural, namespace, name)
KINDS = {"configmaps": by_kind("v1", "ConfigMap"), "secrets": by_kind("v1", "Secret")}
REFRESH_SECONDS = 10.0
SECONDS_PER_OBJECT = 0.5
RETRY_SECONDS = 5.0


def _version(obj: Object | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


class ReferencedObjects(Following[Reference, Object | None]):
    """The referenced objects as last read: ``fetched(key)`` says whether one was read yet."""

    def __init__(
        self,
        api: KubeApi,
        on_change: Callable[[str, Object], None],
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        super().__init__("referenced-objects")
        self._api = api
        self._on_change = on_change
        self.refresh_seconds = refresh_seconds

    def fetched(self, key: Reference) -> bool:
        return key in self._held

    def get(self, key: Reference) -> Object | None:
        return self._held.get(key)

    def follow(self, wanted: set[Reference]) -> None:
        """Keep exactly ``wanted`` fresh; new references are read at once."""
        self._follow(wanted)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        refresh_due = 0.0
        while True:
            self._wake.clear()
            started = loop.time()
            everything = started >= refresh_due
            keys = self._wanted if everything else self._wanted - self._held.keys()
            if await self._read(sorted(keys)):
                if everything:
                    # At most two reads a second from a node however many objects it uses.
                    period = max(self.refresh_seconds, len(self._wanted) * SECONDS_PER_OBJECT)
                    refresh_due = started + period
                timeout = max(0.0, refresh_due - loop.time())
            else:
                timeout = RETRY_SECONDS
            if not self._wanted:
                await self._wake.wait()  # nothing to keep fresh: sleep until a pod needs one
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _read(self, keys: list[Reference]) -> bool:
        """Read ``keys``; False when the server could not be reached."""
        for key in keys:
            kind, namespace, name = key
            info = KINDS[kind]
            assert info is not None
            try:
                obj: Object | None = await self._api.get(info, name, namespace)
            except ApiError as err:
                if err.code != 404:
                    where = f"{namespace}/{name}"
                    logger.warning(
                        "cannot read an object a pod uses",
                        extra={"fields": {"kind": kind, "name": where, "error": str(err)}},
                    )
                    continue
                obj = None
            except ClientError:
                return False
            if key not in self._wanted:
                continue  # no pod uses it any more
            changed = key not in self._held or _version(self._held[key]) != _version(obj)
            self._held[key] = obj
            if changed and obj is not None:
                obj.setdefault("apiVersion", info.api_version)
                obj.setdefault("kind", info.kind)
                self._on_change(kind, obj)
        return True
