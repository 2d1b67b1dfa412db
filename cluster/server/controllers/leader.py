"""Leader election through a coordination.k8s.io Lease, as client-go's leaderelection does.

When several servers share one datastore, only the holder of the Lease runs the scheduler and
controllers. A candidate takes the Lease when it is free or when its record has not changed for
``leaseDurationSeconds`` — measured on the candidate's own clock from when it *observed* the
last change, so machines need not agree on the time. The holder renews every retry period and
gives up leadership if it cannot renew within the renew deadline. Updates carry the
resourceVersion, so two candidates racing for the same Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, Clock, KubeApi, wait_event
from k3py.cluster.client.events import micro_timestamp
from k3py.cluster.server.controllers.base import LEASES

logger = logging.getLogger("k3py.controllers.leader")

Object = dict[str, Any]


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    def __init__(self, api: KubeApi, clock: Clock, config: ElectionConfig) -> None:
        self.api = api
        self.clock = clock
        self.config = config
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0

    async def try_acquire_or_renew(self) -> bool:
        cfg = self.config
        now = micro_timestamp(self.clock)
        try:
            lease = await self.api.get(LEASES, cfg.name, cfg.namespace)
        except ApiError as err:
            if err.code != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                await self.api.create(LEASES, body, cfg.namespace)
            except ApiError as create_err:
                if create_err.code == 409:
                    return False
                raise
            self._observe(cfg.identity, now)
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock.monotonic()
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        expired = self.clock.monotonic() - self._observed_at > duration
        if holder and holder != cfg.identity and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == cfg.identity:
            acquired = str(spec.get("acquireTime") or now)
        else:
            acquired = now
            transitions += 1
        lease["spec"] = self._spec(acquired, now, transitions)
        try:
            await self.api.update(LEASES, lease)
        except ApiError as err:
            if err.code == 409:
                return False
            raise
        self._observe(cfg.identity, now)
        return True

    def _spec(self, acquired: str, renewed: str, transitions: int) -> Object:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _observe(self, holder: str, renewed: str) -> None:
        self._observed = (holder, renewed)
        self._observed_at = self.clock.monotonic()

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process leads (True) or ``stop`` is set (False)."""
        announced = False
        while not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    logger.info(
                        "became the leader", extra={"fields": {"identity": self.config.identity}}
                    )
                    return True
            except (ApiError, ClientError) as err:
                logger.debug("lease not acquired", extra={"fields": {"error": str(err)}})
            if not announced:
                logger.info("waiting for the leader lease", extra={"fields": self._fields()})
                announced = True
            await wait_event(self.clock, stop, self.config.retry_period)
        return False

    async def hold(self, stop: asyncio.Event) -> None:
        """Renew until ``stop`` is set; return early if leadership is lost."""
        last_renewal = self.clock.monotonic()
        while not await wait_event(self.clock, stop, self.config.retry_period):
            try:
                if await self.try_acquire_or_renew():
                    last_renewal = self.clock.monotonic()
                    continue
                logger.warning(
                    "another server took the leader lease", extra={"fields": self._fields()}
                )
                return
            except (ApiError, ClientError) as err:
                logger.warning("lease renewal failed", extra={"fields": {"error": str(err)}})
            if self.clock.monotonic() - last_renewal > self.config.renew_deadline:
                logger.warning("lost the leader lease", extra={"fields": self._fields()})
                return

    async def release(self) -> None:
        """Hand the Lease back on a clean stop so another server need not wait it out."""
        cfg = self.config
        try:
            lease = await self.api.get(LEASES, cfg.name, cfg.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != cfg.identity:
                return
            lease["spec"]["holderIdentity"] = None
            lease["spec"]["leaseDurationSeconds"] = 1
            await self.api.update(LEASES, lease)
        except (ApiError, ClientError) as err:
            logger.debug("lease not released", extra={"fields": {"error": str(err)}})

    def _fields(self) -> dict[str, str]:
        return {
            "lease": f"{self.config.namespace}/{self.config.name}",
            "identity": self.config.identity,
        }
