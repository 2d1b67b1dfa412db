"""The pod network service: the agent's flannel and bridge plugin, behind :class:`PodNetwork`.

:class:`FlannelNetwork` is what the pod workers call (``sandbox_network``, ``attach``,
``detach``) when ``--flannel-backend`` is ``vxlan`` or ``host-gw``. Sandboxes are created with
Docker's ``none`` network; ``attach`` allocates the sandbox's address (:mod:`.ipam`) and wires
it to ``cni0`` (:mod:`.bridge`). In the background it watches every Node:

- its own Node gives the pod CIDR (``spec.podCIDR``, assigned by the server); the bridge, the
  backend device and the masquerade rules (:mod:`.nft`) follow it, and the Node gets flannel's
  annotations (``flannel.alpha.coreos.com/backend-type``, ``backend-data`` with the VTEP MAC,
  ``kube-subnet-manager``, ``public-ip``), which is how the other nodes learn where its pods are;
- every other Node with a pod CIDR and those annotations is a peer: routes, neighbours and FDB
  entries follow them (:mod:`.backend`); a deleted Node's entries are removed.

The pod CIDR and the peers are also kept in ``<data-dir>/agent/network/state.json``, so an agent
that starts without its server wires pods and routes from what it knew, and never removes a
route because the server is silent: peers are pruned only against a complete list of Nodes.
Netlink calls run on one thread of their own (they block, briefly), in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from k3py.cluster.agent.errors import RuntimeUnavailable
from k3py.cluster.agent.network import backend as backends
from k3py.cluster.agent.network import bridge, nft
from k3py.cluster.agent.network.ipam import Ipam
from k3py.cluster.agent.network.netlink import iproute_in, netlink_error
from k3py.cluster.agent.podsync.spec import Pod, spec
from k3py.cluster.agent.runtime import (
    LABEL_KIND,
    LABEL_NODE,
    ContainerInfo,
    ContainerRuntime,
)
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import ClientError, Clock
from k3py.cluster.client.informer import Informer, ListWatcher
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.network")


def _node_info() -> ResourceInfo:
    info = by_kind("v1", "Node")
    assert info is not None
    return info


NODES = _node_info()
ANNOTATION = "flannel.alpha.coreos.com/"
READY_WAIT_SECONDS = 5.0
RECONCILE_SECONDS = 60.0

T = TypeVar("T")


class NodePatcher(Protocol):
    async def patch(
        self, info: Any, name: str, patch: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]: ...


class NetworkApi(ListWatcher, NodePatcher, Protocol):
    """What the network asks of the API: watch Nodes, annotate its own."""


@dataclass(frozen=True)
class NetworkConfig:
    backend: str  # "vxlan" or "host-gw"
    node_name: str
    node_ip: str
    iface: str  # --flannel-iface; empty: the interface holding node_ip
    cluster_cidr: str
    state_dir: Path


def peers_from(nodes: list[dict[str, Any]], own: str, backend: str) -> list[backends.Peer]:
    """The other nodes that can be reached: a pod CIDR and flannel's annotations."""
    peers = []
    for node in nodes:
        meta = node.get("metadata") or {}
        name = str(meta.get("name", ""))
        cidr = str((node.get("spec") or {}).get("podCIDR") or "")
        annotations = meta.get("annotations") or {}
        public_ip = str(annotations.get(ANNOTATION + "public-ip") or "")
        if name == own or not cidr or not public_ip:
            continue
        mac = ""
        if backend == "vxlan":
            try:
                mac = str(
                    json.loads(annotations.get(ANNOTATION + "backend-data") or "{}")["VtepMAC"]
                )
            except (ValueError, KeyError, TypeError):
                continue
        peers.append(backends.Peer(name, cidr, public_ip, mac))
    return sorted(peers, key=lambda p: p.name)


def annotations_for(config: NetworkConfig, vtep_mac: str) -> dict[str, str]:
    wanted = {
        ANNOTATION + "backend-type": config.backend,
        ANNOTATION + "kube-subnet-manager": "true",
        ANNOTATION + "public-ip": config.node_ip,
    }
    if config.backend == "vxlan":
        wanted[ANNOTATION + "backend-data"] = json.dumps(
            {"VNI": backends.VXLAN_VNI, "VtepMAC": vtep_mac}, separators=(",", ":")
        )
    return wanted


class FlannelNetwork:
    def __init__(
        self,
        config: NetworkConfig,
        api: NetworkApi,
        runtime: ContainerRuntime,
        clock: Clock,
        host_ip: str,
    ) -> None:
        self.config = config
        self._api = api
        self._runtime = runtime
        self._clock = clock
        self._host_ip = host_ip
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="k3py-netlink")
        self._informer = Informer(api, NODES, clock=clock)
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pod_cidr = ""
        self._mtu = 1500
        self._underlay_index = 0
        self._vtep_mac = ""
        self._ipam: Ipam | None = None
        self._peers: list[backends.Peer] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- PodNetwork -------------------------------------------------------------------------

    def sandbox_network(self, pod: Pod) -> str | None:
        return "host" if spec(pod).get("hostNetwork") else "none"

    async def attach(self, pod: Pod, sandbox: ContainerInfo) -> str:
        if spec(pod).get("hostNetwork"):
            return self._host_ip
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), READY_WAIT_SECONDS)
        if self._ipam is None:
            raise RuntimeUnavailable("the pod network is not ready: this node has no pod CIDR yet")
        if not sandbox.pid:
            raise RuntimeUnavailable(f"sandbox {sandbox.id[:12]} is not running")
        async with self._lock:
            address = self._ipam.allocate(sandbox.id)
            try:
                await self._netlink(
                    lambda ipr: bridge.wire_sandbox(
                        ipr, sandbox.pid, sandbox.id, address, self._pod_cidr, self._mtu
                    )
                )
            except (OSError, RuntimeError, netlink_error()) as err:
                # The address stays the sandbox's: the worker's retry wires the same one.
                raise RuntimeUnavailable(
                    f"cannot wire sandbox {sandbox.id[:12]} to the pod network: {err}"
                ) from err
        return address

    async def detach(self, pod: Pod, sandbox: ContainerInfo) -> None:
        if spec(pod).get("hostNetwork"):
            return
        async with self._lock:
            await self._netlink(lambda ipr: bridge.unwire_sandbox(ipr, sandbox.id))
            if self._ipam is not None:
                self._ipam.release(sandbox.id)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._in_thread(bridge.set_forwarding)
        state = self._load_state()
        if state.get("podCIDR"):
            # What this node knew: pods and routes work before (or without) the server.
            self._peers = [backends.Peer(**p) for p in state.get("peers") or []]
            await self.configure(str(state["podCIDR"]))
            await self._sync_peers(self._peers)
        self._informer.add_handler(
            lambda _obj: self._changed.set(),
            lambda _old, _new: self._changed.set(),
            lambda _obj: self._changed.set(),
        )
        self._informer.start()
        self._tasks = [
            asyncio.create_task(self._follow_nodes(), name="network-nodes"),
            asyncio.create_task(self._reconcile_loop(), name="network-ipam"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks, log=logger)
        await self._informer.stop()
        self._executor.shutdown(wait=True)

    # -- state ------------------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.config.state_dir / "state.json"

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        state = {"podCIDR": self._pod_cidr, "peers": [asdict(p) for p in self._peers]}
        temporary = self._state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        temporary.replace(self._state_path)

    # -- netlink on its own thread -----------------------------------------------------------

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _netlink(self, fn: Callable[[Any], T]) -> T:
        def run() -> T:
            with iproute_in() as ipr:
                return fn(ipr)

        return await self._in_thread(run)

    # -- the node's own network ---------------------------------------------------------------

    async def configure(self, pod_cidr: str) -> None:
        """Bridge, backend device, masquerade and IPAM for ``pod_cidr`` (idempotent)."""
        config = self.config

        def setup(ipr: Any) -> tuple[int, int, str]:
            index, _name, underlay_mtu = backends.underlay(ipr, config.node_ip, config.iface)
            mac = ""
            mtu = underlay_mtu
            if config.backend == "vxlan":
                mtu = underlay_mtu - backends.VXLAN_OVERHEAD
                mac = backends.ensure_vxlan(ipr, config.node_ip, index, mtu, pod_cidr)
            else:
                backends.remove_vxlan(ipr)
            bridge.ensure_bridge(ipr, pod_cidr, mtu)
            return index, mtu, mac

        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._underlay_index, self._mtu, self._vtep_mac = await self._netlink(setup)
        await nft.apply_masquerade(config.cluster_cidr)
        await nft.allow_in_docker_user(config.cluster_cidr)
        if pod_cidr != self._pod_cidr or self._ipam is None:
            self._ipam = Ipam(self.config.state_dir / "ipam", pod_cidr)
            self._pod_cidr = pod_cidr
            await self.reconcile()
        self._save_state()
        self._ready.set()
        logger.info(
            "pod network ready",
            extra={
                "fields": {
                    "backend": config.backend,
                    "podCIDR": pod_cidr,
                    "mtu": self._mtu,
                    "node_ip": config.node_ip,
                }
            },
        )

    async def _sync_peers(self, peers: list[backends.Peer]) -> int:
        backend, index = self.config.backend, self._underlay_index
        return await self._netlink(lambda ipr: backends.sync_peers(ipr, backend, peers, index))

    async def _follow_nodes(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._apply_nodes()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pod network update failed; retrying")
                await self._clock.sleep(2.0)
                self._changed.set()

    async def _apply_nodes(self) -> None:
        own = self._informer.get(self.config.node_name)
        if own is None:
            return  # not registered yet (or deleted): keep what is programmed
        cidr = str((own.get("spec") or {}).get("podCIDR") or "")
        if not cidr:
            return
        if cidr != self._pod_cidr:
            await self.configure(cidr)
        await self._annotate(own)
        peers = peers_from(self._informer.list(), self.config.node_name, self.config.backend)
        started = time.monotonic()
        changes = await self._sync_peers(peers)
        if peers != self._peers:
            self._peers = peers
            self._save_state()
        if changes:
            logger.info(
                "peer routes programmed",
                extra={
                    "fields": {
                        "peers": len(peers),
                        "changes": changes,
                        "ms": round((time.monotonic() - started) * 1000, 1),
                    }
                },
            )

    async def _annotate(self, own: dict[str, Any]) -> None:
        wanted = annotations_for(self.config, self._vtep_mac)
        current = (own.get("metadata") or {}).get("annotations") or {}
        if all(current.get(k) == v for k, v in wanted.items()):
            return
        try:
            await self._api.patch(
                NODES, self.config.node_name, {"metadata": {"annotations": wanted}}
            )
        except (ClientError, ApiError) as err:
            logger.warning("cannot annotate the Node", extra={"fields": {"error": str(err)}})
            await self._clock.sleep(2.0)
            self._changed.set()

    # -- addresses of sandboxes that are gone ------------------------------------------------

    def allocations(self) -> dict[str, str]:
        """Sandbox id → pod address, as recorded on disk."""
        return self._ipam.allocations if self._ipam is not None else {}

    async def veths(self) -> list[str]:
        """The sandboxes' veths on ``cni0``."""
        return await self._netlink(bridge.bridge_ports)

    async def reconcile(self) -> None:
        """Release the addresses of sandboxes that no longer exist."""
        if self._ipam is None:
            return
        async with self._lock:
            sandboxes = await self._runtime.list_containers(
                {LABEL_NODE: self.config.node_name, LABEL_KIND: "sandbox"}
            )
            released = self._ipam.reconcile({s.id for s in sandboxes})
            live = {bridge.veth_name(s.id) for s in sandboxes}
            await self._netlink(lambda ipr: bridge.unwire_stale(ipr, live))
        if released:
            logger.info(
                "released addresses of removed sandboxes",
                extra={"fields": {"count": len(released)}},
            )

    async def _reconcile_loop(self) -> None:
        while True:
            await self._clock.sleep(RECONCILE_SECONDS)
            try:
                await self.reconcile()
            except RuntimeUnavailable as err:
                logger.warning("address reconcile failed", extra={"fields": {"error": str(err)}})


def remove_pod_network(state_dir: Path) -> bool:
    """What an earlier run made (``--flannel-backend none`` now): devices, routes, state.

    Only when this data directory's network state exists, so that a ``cni0`` or ``flannel.1``
    of another installation (K3s names them the same) is never touched. Blocking.
    """
    if not (state_dir / "state.json").exists():
        return False

    def remove(ipr: Any) -> None:
        backends.sync_peers_removed(ipr)
        backends.remove_vxlan(ipr)
        index = ipr.link_lookup(ifname=bridge.BRIDGE)
        if index:
            ipr.link("del", index=index[0])

    try:
        with iproute_in() as ipr:
            remove(ipr)
    except netlink_error() as err:
        raise OSError(f"cannot remove the pod network's devices: {err}") from err
    for path in sorted(state_dir.rglob("*"), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    state_dir.rmdir()
    return True
