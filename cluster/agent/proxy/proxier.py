"""The proxier: keeps k3py's nftables table equal to what the cached Services and Endpoints say.

It starts with a full sync (the table replaced as a whole, so rules left by a previous run or a
crashed agent vanish in the same transaction that installs the current ones), then follows the
:class:`~k3py.cluster.agent.proxy.source.ServiceCache`: a changed Service or Endpoints marks its
``namespace/name`` dirty, only that service's fragments are recomputed, and the difference is
applied as one transaction as soon as the previous one finished (changes that arrive meanwhile
are coalesced). The cost of a change therefore follows the size of the change, not the number
of services. A refused transaction falls back to a full sync. When the server is unreachable
nothing changes, so the last rules stay in force.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from k3py.cluster.agent.proxy import rules
from k3py.cluster.agent.proxy.model import HostPort, service_ports
from k3py.cluster.agent.proxy.nft import Nftables, NftError
from k3py.cluster.agent.proxy.rules import Fragment, ProxyConfig, Redirect
from k3py.cluster.agent.proxy.source import ServiceCache

logger = logging.getLogger("k3py.agent.proxy")

HOST_PORTS = "@hostports"
REDIRECT = "@redirect"
RETRY_SECONDS = 1.0
# Observer of each applied change: (seconds from the first change marked to the commit).
AppliedHook = Callable[[float], None]


class Proxier:
    def __init__(
        self,
        cache: ServiceCache,
        nft: Nftables,
        config: ProxyConfig,
        *,
        redirect: Redirect | None = None,
    ) -> None:
        self.cache = cache
        self.nft = nft
        self.config = config
        self.redirect = redirect
        # service key (namespace/name) → its fragments by service-port key
        self._fragments: dict[str, dict[str, Fragment]] = {}
        self._dirty: dict[str, float] = {}
        self._users: Counter[rules.MapKey] = Counter()  # set elements shared by services
        self._wake = asyncio.Event()
        self._full_needed = True
        self._host_ports: Fragment = rules.host_ports_fragment([])
        self._host_ports_dirty = False
        self._pending_host_ports: tuple[Fragment | None, Fragment | None] = (None, None)
        self.on_applied: AppliedHook | None = None
        self.synced = asyncio.Event()
        self.generation = 0  # bumped after every applied transaction
        self._applied_event = asyncio.Event()
        cache.add_listener(self.mark)

    # -- inputs -------------------------------------------------------------------------------

    def mark(self, key: str) -> None:
        self._dirty.setdefault(key, time.monotonic())
        self._wake.set()

    def mark_all(self) -> None:
        """Replace everything at the next pass (after an unexpected failure)."""
        self._full_needed = True
        self._wake.set()

    def set_host_ports(self, ports: Iterable[HostPort]) -> None:
        fragment = rules.host_ports_fragment(ports)
        if fragment != self._host_ports:
            applied = self._pending_host_ports[0] if self._host_ports_dirty else self._host_ports
            self._pending_host_ports = (applied, fragment)
            self._host_ports = fragment
            self._host_ports_dirty = True
            self._wake.set()

    # -- computing ----------------------------------------------------------------------------

    def _compute(self, key: str) -> dict[str, Fragment]:
        namespace, _, name = key.partition("/")
        service = self.cache.service(namespace, name)
        if service is None:
            return {}
        ports = service_ports(service, self.cache.endpoints_of(namespace, name))
        if self.redirect is not None:
            # The cluster DNS address is answered on this node, not by endpoints.
            redirect = self.redirect
            ports = [
                p for p in ports if (p.cluster_ip, p.port) != (redirect.address, redirect.port)
            ]
        return {sp.key: rules.service_fragment(sp, self.config) for sp in ports}

    def _fixed_fragments(self) -> list[Fragment]:
        fixed = [self._host_ports]
        if self.redirect is not None:
            fixed.append(rules.redirect_fragment(self.redirect))
        return fixed

    # -- applying -----------------------------------------------------------------------------

    async def full_sync(self) -> None:
        self._dirty.clear()
        self._host_ports_dirty = False
        self._fragments = {key: self._compute(key) for key in self.cache.names()}
        everything = [f for frags in self._fragments.values() for f in frags.values()]
        existing = await self.nft.existing(self.config.table)
        fragments = [*self._fixed_fragments(), *everything]
        await self.nft.apply(rules.full_ruleset(self.config, fragments, existing))
        self._users = rules.set_element_users(fragments)
        self._full_needed = False
        self._applied(None)

    async def sync_changes(self) -> None:
        dirty, self._dirty = self._dirty, {}
        changes: dict[str, tuple[Fragment | None, Fragment | None]] = {}
        computed: dict[str, dict[str, Fragment]] = {}
        for key in dirty:
            old = self._fragments.get(key, {})
            new = self._compute(key)
            computed[key] = new
            for sp_key in {*old, *new}:
                if old.get(sp_key) != new.get(sp_key):
                    changes[sp_key] = (old.get(sp_key), new.get(sp_key))
        if self._host_ports_dirty:
            changes[HOST_PORTS] = self._pending_host_ports
            self._host_ports_dirty = False
        users = Counter(self._users)
        batch = rules.diff(self.config, changes, users)
        try:
            await self.nft.apply(batch)
        except NftError:
            self._full_needed = True
            raise
        self._users = users
        for key, new in computed.items():
            if new:
                self._fragments[key] = new
            else:
                self._fragments.pop(key, None)
        self._applied(min(dirty.values()) if dirty else None)

    def _applied(self, since: float | None) -> None:
        self.generation += 1
        self.synced.set()
        self._applied_event.set()
        self._applied_event = asyncio.Event()
        if since is not None and self.on_applied is not None:
            self.on_applied(time.monotonic() - since)

    async def wait_applied(self, after: int) -> None:
        """Until a transaction after generation ``after`` is in the kernel."""
        while self.generation <= after:
            await self._applied_event.wait()

    async def run(self) -> None:
        """Sync until cancelled."""
        while True:
            try:
                if self._full_needed:
                    await self.full_sync()
                    logger.info(
                        "service rules in place",
                        extra={"fields": {"services": len(self._fragments)}},
                    )
                self._wake.clear()
                if self._dirty or self._host_ports_dirty:
                    await self.sync_changes()
                    continue
                await self._wake.wait()
            except NftError as err:
                logger.warning(
                    "service rules not applied; retrying", extra={"fields": {"error": str(err)}}
                )
                self._full_needed = True
                await asyncio.sleep(RETRY_SECONDS)

    async def remove(self) -> None:
        """Take the proxy's rules out of the node (``--flannel-backend none``, uninstall); the
        shared table goes too when nothing else is left in it."""
        existing = await self.nft.existing(self.config.table)
        lines = rules.removal(self.config, existing)
        if lines and all(c.startswith(rules.PREFIX) for c in existing.chains):
            lines.append(f"delete table {self.config.table}")
        if lines:
            await self.nft.apply("\n".join(lines) + "\n")
