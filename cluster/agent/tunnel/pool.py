"""One tunnel to every API server the agent knows, as K3s's agent keeps one per server.

``kubectl logs`` and ``exec`` reach a node through the tunnel that the node holds with the very
server the request arrived at; with several servers, each needs its own. :class:`TunnelPool`
follows the load balancer's servers (the ``kubernetes`` Endpoints' addresses when they name
several servers, else the one the agent reaches) and keeps one :class:`TunnelClient` per
server, dialled directly (every server's certificate comes from the one cluster CA and names its
own addresses), started when a server appears and stopped when it leaves the list. Each client
reconnects on its own, so a dead server costs nothing but its retries, and the others keep
serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from k3py.cluster.agent.loadbalancer import ServerLoadBalancer
from k3py.cluster.agent.tunnel.client import StreamHandler, TunnelClient
from k3py.cluster.api.tunnel import CONNECT_PATH
from k3py.cluster.client.clock import Clock
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.tunnel")

FOLLOW_PERIOD = 1.0


class TunnelPool:
    """Tunnels to every known server; ``connected`` is set while at least one is up."""

    def __init__(
        self,
        balancer: ServerLoadBalancer,
        ssl_context: ssl.SSLContext | None,
        handler: StreamHandler,
        clock: Clock,
    ) -> None:
        self._balancer = balancer
        self._ssl = ssl_context
        self._handler = handler
        self._clock = clock
        self._tunnels: dict[str, tuple[TunnelClient, asyncio.Task[None]]] = {}
        self.connected = asyncio.Event()

    @property
    def connections(self) -> int:
        return sum(client.connections for client, _ in self._tunnels.values())

    @property
    def servers(self) -> list[str]:
        return sorted(self._tunnels)

    def _follow(self) -> None:
        # With several servers, the Endpoints' addresses (--server may name one of them by
        # another address, and two tunnels of one node to one server would replace each
        # other). With one, the address the agent was given: it is known to be reachable,
        # the advertised one perhaps not (NAT).
        learned = self._balancer.learned
        wanted = set(learned) if len(learned) > 1 else {self._balancer.current}
        for address in wanted - set(self._tunnels):
            client = TunnelClient(
                f"wss://{address}{CONNECT_PATH}", self._ssl, self._handler, self._clock
            )
            task = asyncio.create_task(client.run(), name=f"agent-tunnel-{address}")
            self._tunnels[address] = (client, task)
        for address in set(self._tunnels) - wanted:
            _, task = self._tunnels.pop(address)
            task.cancel()
        if any(client.connected.is_set() for client, _ in self._tunnels.values()):
            self.connected.set()
        else:
            self.connected.clear()

    async def run(self) -> None:
        try:
            while True:
                self._follow()
                await self._clock.sleep(FOLLOW_PERIOD)
        finally:
            tasks = [task for _, task in self._tunnels.values()]
            self._tunnels.clear()
            self.connected.clear()
            with contextlib.suppress(Exception):
                await cancel_and_wait(*tasks, log=logger)
