"""The agent process, top to bottom: identity, runtime, images, pods, node, tunnel.

:func:`run_agent` is what ``k3py agent`` runs. Its steps, in order: obtain the node's
credentials (stored, or by joining), reach the container runtime, register the Node and renew
its Lease (in the background from then on; the join and the first registration go over the
standard library, aiohttp is imported after them: it is the largest import of the start),
then import and build the parts that run pods
(:mod:`k3py.cluster.agent.workers`), make sure the sandbox image exists and load air-gap
images, start the pod sync loop on the pods of the local store (so a node that boots without
its server runs its pods anyway), then start watching the server's pods, and the tunnel. Every
background task is supervised: one that fails is logged at once and restarted. SIGTERM or
SIGINT stops the agent and leaves the containers running, as a kubelet does, so that a
restarted agent adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from k3py.cluster.agent import memory
from k3py.cluster.agent.errors import RuntimeUnavailable
from k3py.cluster.agent.loadbalancer import ServerLoadBalancer
from k3py.cluster.agent.metrics.bundle import AgentObservability
from k3py.cluster.agent.node.identity import NodeIdentity, ensure_identity
from k3py.cluster.agent.node.machine import Machine, node_ip
from k3py.cluster.agent.node.registration import NodeReporter, NodeSpec
from k3py.cluster.agent.runtime import ContainerRuntime
from k3py.cluster.agent.settings import AgentSettings, flannel_enabled
from k3py.cluster.client import Clock, EventRecorder, KubeClient, RealClock
from k3py.shutdown import cancel_and_wait, until_signalled

if TYPE_CHECKING:
    from k3py.cluster.agent.workers import NodeWorkers

logger = logging.getLogger("k3py.agent")

RUNTIME_WAIT_SECONDS = 120.0
RUNTIME_POLL_SECONDS = 0.25
RUNTIME_LOG_EVERY = 40  # every 10 s
# How long the start waits for the first registration attempt before loading images.
REGISTER_FIRST_SECONDS = 10.0
AGENT_CONNECTIONS = 8


def make_runtime(settings: AgentSettings, clock: Clock) -> ContainerRuntime:
    if settings.runtime == "fake":
        from k3py.cluster.agent.runtime.fake import FakeRuntime

        return FakeRuntime(clock, pull_any=True)
    from k3py.cluster.agent.runtime.docker import DockerRuntime

    return DockerRuntime(settings.container_runtime_endpoint)


async def wait_for_runtime(runtime: ContainerRuntime, clock: Clock) -> str:
    """The runtime's version once it answers (at boot, dockerd may start after the agent)."""
    deadline = clock.monotonic() + RUNTIME_WAIT_SECONDS
    attempt = 0
    while True:
        try:
            return await runtime.version()
        except RuntimeUnavailable as err:
            if clock.monotonic() > deadline:
                raise
            if attempt % RUNTIME_LOG_EVERY == 0:
                logger.info(
                    "waiting for the container runtime", extra={"fields": {"error": str(err)}}
                )
            # Often: at boot the Node registers as soon as the engine answers (an attempt
            # that finds no socket costs next to nothing).
            await clock.sleep(RUNTIME_POLL_SECONDS)
            attempt += 1


async def with_runtime_retries(
    what: str, work: Callable[[], Awaitable[object]], clock: Clock, attempts: int = 4
) -> None:
    """Run a start-up step against the runtime, again after a dropped connection or an engine
    that stopped answering: an engine still settling at boot (under emulation, seconds after
    its socket appears) has reset a large image upload once. Loading an image again is
    harmless; a step still failing after ``attempts`` raises."""
    for attempt in range(1, attempts + 1):
        try:
            await work()
            return
        except RuntimeUnavailable as err:
            if attempt == attempts:
                raise
            logger.warning(
                "container runtime step failed; trying again",
                extra={"fields": {"step": what, "attempt": attempt, "error": str(err)}},
            )
            await clock.sleep(2.0 * attempt)


async def _supervised(name: str, work: Callable[[], Awaitable[None]], clock: Clock) -> None:
    """Run ``work`` forever: a failure is logged with its traceback and the work restarted."""
    while True:
        try:
            await work()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "background task failed; restarting it", extra={"fields": {"task": name}}
            )
            await clock.sleep(5.0)


class Agent:
    """One running agent: what registers its Node first, then the parts that run pods.

    The pod sync, pod network, services and tunnel (:class:`NodeWorkers`) are built and
    imported once the first registration was attempted (:meth:`start`).
    """

    def __init__(self, settings: AgentSettings, identity: NodeIdentity, clock: Clock) -> None:
        self.settings = settings
        self.identity = identity
        self.clock = clock
        self.observability = AgentObservability(
            make_runtime(settings, clock),
            identity.node_name,
            settings.data_dir,
            clock,
            usage_interval=settings.usage_interval_seconds,
            healthz_address=settings.healthz_bind_address,
            healthz_port=settings.healthz_port,
        )
        self.runtime: ContainerRuntime = self.observability.runtime
        # API calls, watches and the tunnel go through the load balancer, which moves them to
        # a live server when one dies; identity.server_url stays the node's own reference.
        self.balancer = ServerLoadBalancer(identity.server_url, settings.agent_dir / "servers.json")
        self.client = KubeClient(
            self.balancer.url,
            ssl_context=identity.ssl_context(),
            user_agent=f"k3py-agent/{identity.node_name}",
            # Three watches plus a few writers: every extra TLS connection costs the board
            # about 100 kB, and bursts of status writes queue briefly instead.
            max_connections=AGENT_CONNECTIONS,
            # The Node registers over the standard library; aiohttp is imported after.
            light_start=True,
        )
        self.addresses = settings.node_ips or (node_ip(identity.server_url),)
        self.recorder = EventRecorder(self.client, clock, "kubelet", identity.node_name)
        self.reporter = NodeReporter(
            self.client,
            clock,
            NodeSpec(
                name=identity.node_name,
                addresses=self.addresses,
                hostname=socket.gethostname(),
                labels=settings.node_labels,
                taints=settings.node_taints,
                data_dir=settings.data_dir,
            ),
            Machine.read(settings.data_dir, settings.max_pods),
            self.runtime.version,
            settings.lease_seconds,
            recorder=self.recorder,
        )
        self.workers: NodeWorkers | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _background(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(
            asyncio.create_task(_supervised(name, work, self.clock), name=f"agent-{name}")
        )

    async def start(self) -> None:
        await self.balancer.start()
        await wait_for_runtime(self.runtime, self.clock)
        # The Node registers (Ready: the runtime answers) before the images below load: that
        # takes seconds of a board's CPU at first boot, and pods bound meanwhile only wait for
        # the pod sync, which starts once the images are there. An engine busy importing
        # would slow the registration's own calls, so the first attempt goes first (bounded:
        # a server that does not answer must not hold up this node's pods).
        self._background("events", self.recorder.run)
        self._background("node", self.reporter.run)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reporter.attempted.wait(), REGISTER_FIRST_SECONDS)
        memory.import_aiohttp()
        self.client.use_aiohttp()
        from k3py.cluster.agent.images.airgap import ensure_sandbox_image, load_airgap_images
        from k3py.cluster.agent.workers import NodeWorkers

        self.workers = NodeWorkers(
            self.settings,
            self.identity,
            self.clock,
            client=self.client,
            balancer=self.balancer,
            recorder=self.recorder,
            observability=self.observability,
            host_ip=self.addresses[0],
        )
        await with_runtime_retries(
            "sandbox image",
            lambda: ensure_sandbox_image(self.runtime, self.settings.pause_image),
            self.clock,
        )
        await with_runtime_retries(
            "air-gap images",
            lambda: load_airgap_images(self.runtime, self.settings.agent_dir / "images"),
            self.clock,
        )
        await self.workers.start(self._background, self._syncloop_check)
        await self.observability.start()
        logger.info(
            "k3py agent is running",
            extra={"fields": {"node": self.identity.node_name, "server": self.identity.server_url}},
        )

    def _syncloop_check(self) -> str | None:
        stopped = [t.get_name() for t in self._tasks if t.done()]
        return f"stopped: {', '.join(stopped)}" if stopped else None

    async def stop(self) -> None:
        await self.observability.stop()
        await cancel_and_wait(*self._tasks, log=logger)
        if self.workers is not None:
            await self.workers.stop()
        with contextlib.suppress(Exception):
            await self.recorder.flush()
        await self.client.close()
        await self.balancer.stop()
        await self.runtime.close()


async def run_agent(settings: AgentSettings) -> None:
    clock = RealClock()
    if flannel_enabled(settings):
        from k3py.cluster.agent.network.kernel import check_kernel

        check_kernel(settings.flannel_backend)
    identity = await ensure_identity(settings)
    agent = Agent(settings, identity, clock)
    await agent.start()
    from k3py.cluster import sdnotify

    # The server's own agent is its child: the unit's readiness is the server's to report.
    if not os.environ.get("K3PY_PARENT_PID"):
        sdnotify.ready(f"node {identity.node_name} is running")
    updater = None
    # Over-the-air updates, when the firmware launcher started this agent or the board has the
    # A/B boot state of U-Boot's script (they make updates safe).
    if os.environ.get("K3PY_LAUNCHER_PID") or os.path.exists("/boot/firmware/k3pyenv.0"):
        from k3py import __version__
        from k3py.cluster.ota.agent import start_under_launcher

        updater = start_under_launcher(
            agent.client, identity.server_url, identity.ssl_context(), identity.node_name,
            __version__,
        )  # fmt: skip
    try:
        await until_signalled()
        logger.info("k3py agent is stopping; containers keep running")
    finally:
        if updater is not None:
            updater.cancel()
        await agent.stop()
