"""The node's bridge ``cni0`` and each sandbox's veth pair (what CNI's bridge plugin does).

Blocking netlink calls (each well under a millisecond); :class:`k3py.cluster.agent.network.
podnet.PodNetworkService` runs them on its one netlink thread. The bridge holds the pod CIDR's
first address, the pods' gateway. A sandbox gets a veth pair: ``eth0`` created directly in the
sandbox's namespace (found through its PID), addressed from the pod CIDR with a default route
via the gateway, and ``veth<sandbox id prefix>`` on the bridge. Every step is idempotent: an
agent restarted over running pods finds their ``eth0`` already addressed and changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import time
from pathlib import Path
from typing import Any

from k3py.cluster.agent.network.netlink import iproute_in, netlink_error

BRIDGE = "cni0"
POD_IFACE = "eth0"
VETH_PREFIX = "veth"
NET_ADDR_SET = "3"  # addr_assign_type of a MAC set by hand


def veth_name(sandbox_id: str) -> str:
    """The host end of a sandbox's veth pair (15 characters, the kernel's limit)."""
    return f"{VETH_PREFIX}{sandbox_id[:11]}"


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _addresses(ipr: Any, index: int) -> set[tuple[str, int]]:
    return {
        (a.get_attr("IFA_ADDRESS"), int(a["prefixlen"]))
        for a in ipr.get_addr(index=index, family=2)
    }


def set_forwarding() -> None:
    """Routing between the bridge, the backend device and the LAN (this namespace only)."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    if path.read_text().strip() != "1":
        path.write_text("1\n")


def ensure_bridge(ipr: Any, pod_cidr: str, mtu: int) -> int:
    """``cni0`` up with the gateway address of ``pod_cidr`` (and no other); returns its index."""
    network = ipaddress.ip_network(pod_cidr, strict=False)
    gateway = (str(network.network_address + 1), network.prefixlen)
    index = _index(ipr, BRIDGE)
    if index is None:
        with contextlib.suppress(netlink_error()):
            ipr.link("add", ifname=BRIDGE, kind="bridge")
        index = _index(ipr, BRIDGE)
        assert index is not None
    _pin_mac(ipr, index)
    current = _addresses(ipr, index)
    for address, prefixlen in current - {gateway}:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    if gateway not in current:
        ipr.addr("add", index=index, address=gateway[0], prefixlen=gateway[1])
    ipr.link("set", index=index, state="up", mtu=mtu)
    return index


def _pin_mac(ipr: Any, index: int) -> None:
    """Fix the bridge's MAC: left to itself a bridge takes its lowest port's, so a new pod
    would change the gateway's MAC under the others (and lose an ARP reply in flight)."""
    try:
        assigned = Path(f"/sys/class/net/{BRIDGE}/addr_assign_type").read_text().strip()
    except OSError:
        assigned = ""
    if assigned != NET_ADDR_SET:
        mac = ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
        ipr.link("set", index=index, address=mac)


def wire_sandbox(
    ipr: Any, pid: int, sandbox_id: str, address: str, pod_cidr: str, mtu: int
) -> None:
    """Give the sandbox (process ``pid``) its ``eth0`` with ``address``, wired to ``cni0``."""
    network = ipaddress.ip_network(pod_cidr, strict=False)
    gateway = str(network.network_address + 1)
    host_end = veth_name(sandbox_id)
    bridge = _index(ipr, BRIDGE)
    if bridge is None:
        raise RuntimeError(f"the bridge {BRIDGE} is missing")
    with iproute_in(pid) as inside:
        pod_end = _index(inside, POD_IFACE)
        if pod_end is not None and (address, network.prefixlen) in _addresses(inside, pod_end):
            host = _index(ipr, host_end)
            if host is not None:
                ipr.link("set", index=host, master=bridge, state="up")
                return
        if pod_end is not None:  # half-wired by an agent that stopped midway: start over
            inside.link("del", index=pod_end)
        stale = _index(ipr, host_end)
        if stale is not None:
            ipr.link("del", index=stale)
        ipr.link(
            "add",
            ifname=host_end,
            kind="veth",
            mtu=mtu,
            peer={"ifname": POD_IFACE, "net_ns_pid": pid, "mtu": mtu},
        )
        host = _index(ipr, host_end)
        assert host is not None
        ipr.link("set", index=host, master=bridge, state="up")
        lo = _index(inside, "lo")
        if lo is not None:
            inside.link("set", index=lo, state="up")
        pod_end = _index(inside, POD_IFACE)
        assert pod_end is not None
        inside.addr("add", index=pod_end, address=address, prefixlen=network.prefixlen)
        inside.link("set", index=pod_end, state="up")
        inside.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=pod_end)
        _wait_running(inside, pod_end)
        _wait_running(ipr, host)


def _wait_running(ipr: Any, index: int, seconds: float = 2.0) -> None:
    """Until the kernel's link watcher has activated the device's queue (operstate UP).

    Until then a veth that is up drops what it sends: the pod's first ARP reply would be
    lost and its first connection would wait a second for the retry.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ipr.get_links(index)[0].get_attr("IFLA_OPERSTATE") == "UP":
            return
        time.sleep(0.0005)


def unwire_sandbox(ipr: Any, sandbox_id: str) -> None:
    """Remove the sandbox's veth pair (gone already when its namespace died)."""
    unwire_by_name(ipr, veth_name(sandbox_id))


def unwire_by_name(ipr: Any, name: str) -> None:
    index = _index(ipr, name)
    if index is None:
        return
    try:
        ipr.link("del", index=index)
    except netlink_error() as err:
        if getattr(err, "code", None) != errno.ENODEV:
            raise


def bridge_ports(ipr: Any) -> list[str]:
    """The names of the veths on ``cni0``."""
    bridge = _index(ipr, BRIDGE)
    if bridge is None:
        return []
    return [
        str(link.get_attr("IFLA_IFNAME"))
        for link in ipr.get_links()
        if link.get_attr("IFLA_MASTER") == bridge
    ]


def unwire_stale(ipr: Any, live: set[str]) -> None:
    """Remove the veths on ``cni0`` that belong to no live sandbox."""
    for name in bridge_ports(ipr):
        if name.startswith(VETH_PREFIX) and name not in live:
            unwire_by_name(ipr, name)
