"""flannel's backends in netlink terms: how a packet for another node's pod CIDR leaves.

- ``vxlan``: the device ``flannel.1`` (VNI 1, UDP 8472, learning off, on the underlay
  interface), holding the node's pod CIDR network address as a /32. For every other node: a
  route to its pod CIDR via its VTEP address (the CIDR's network address) on ``flannel.1``
  (``onlink``), a permanent neighbour entry giving that address the node's VTEP MAC, and an FDB
  entry sending that MAC to the node's public IP — exactly what flanneld programs.
- ``host-gw``: a route to each node's pod CIDR via the node's address on the underlay.

Routes carry the protocol number :data:`RTPROT_K3PY`, so an agent finds its own (and only its
own) again after a restart and removes those of nodes deleted meanwhile; neighbour and FDB
entries on ``flannel.1`` are all k3py's. :func:`sync_peers` makes the kernel's state equal to
the given peers: it adds what is missing, replaces what changed, deletes the rest, and changes
nothing when nothing differs (so a restart does not duplicate anything). Blocking netlink calls,
run on the network's thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from k3py.cluster.agent.network.netlink import netlink_error

VXLAN_DEVICE = "flannel.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50  # outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
RTPROT_K3PY = 107  # 'k': marks the routes k3py programs
NUD_PERMANENT = 0x80


@dataclass(frozen=True)
class Peer:
    """Another node as the network sees it (from its Node object)."""

    name: str
    pod_cidr: str
    public_ip: str
    vtep_mac: str = ""

    @property
    def vtep_ip(self) -> str:
        return str(ipaddress.ip_network(self.pod_cidr, strict=False).network_address)


def _index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def underlay(ipr: Any, node_ip: str, iface: str = "") -> tuple[int, str, int]:
    """(index, name, MTU) of ``iface``, or of the interface that holds ``node_ip``."""
    if iface:
        index = _index(ipr, iface)
        if index is None:
            raise LookupError(f"--flannel-iface {iface}: no such interface")
    else:
        found = [a["index"] for a in ipr.get_addr(family=2) if a.get_attr("IFA_ADDRESS") == node_ip]
        if not found:
            raise LookupError(f"no interface holds the node address {node_ip} (see --node-ip)")
        index = int(found[0])
    link = ipr.get_links(index)[0]
    return index, str(link.get_attr("IFLA_IFNAME")), int(link.get_attr("IFLA_MTU"))


def ensure_vxlan(ipr: Any, node_ip: str, underlay_index: int, mtu: int, pod_cidr: str) -> str:
    """``flannel.1`` as flannel makes it; returns its MAC (the VTEP MAC to publish)."""
    index = _index(ipr, VXLAN_DEVICE)
    if index is not None:
        data = _vxlan_data(ipr, index)
        wanted = {"IFLA_VXLAN_ID": VXLAN_VNI, "IFLA_VXLAN_LOCAL": node_ip}
        if any(data.get(k) != v for k, v in wanted.items()) or (
            data.get("IFLA_VXLAN_LINK") != underlay_index
        ):
            ipr.link("del", index=index)  # made for another address or interface
            index = None
    if index is None:
        ipr.link(
            "add",
            ifname=VXLAN_DEVICE,
            kind="vxlan",
            vxlan_id=VXLAN_VNI,
            vxlan_port=VXLAN_PORT,
            vxlan_local=node_ip,
            vxlan_link=underlay_index,
            vxlan_learning=0,
            mtu=mtu,
        )
        index = _index(ipr, VXLAN_DEVICE)
        assert index is not None
    vtep = str(ipaddress.ip_network(pod_cidr, strict=False).network_address)
    current = {
        (a.get_attr("IFA_ADDRESS"), int(a["prefixlen"]))
        for a in ipr.get_addr(index=index, family=2)
    }
    for address, prefixlen in current - {(vtep, 32)}:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    if (vtep, 32) not in current:
        ipr.addr("add", index=index, address=vtep, prefixlen=32)
    ipr.link("set", index=index, state="up", mtu=mtu)
    return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def _vxlan_data(ipr: Any, index: int) -> dict[str, Any]:
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    return dict(data["attrs"]) if data is not None else {}


def remove_vxlan(ipr: Any) -> None:
    index = _index(ipr, VXLAN_DEVICE)
    if index is not None:
        ipr.link("del", index=index)


def _our_routes(ipr: Any) -> dict[str, tuple[str, int]]:
    """dst/len → (gateway, oif) for the routes carrying k3py's protocol number."""
    routes = {}
    for route in ipr.get_routes(family=socket.AF_INET, table=254, proto=RTPROT_K3PY):
        if route["proto"] != RTPROT_K3PY:
            continue
        dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
        routes[dst] = (str(route.get_attr("RTA_GATEWAY")), int(route.get_attr("RTA_OIF") or 0))
    return routes


def sync_peers_removed(ipr: Any) -> int:
    """Delete every route k3py programmed (the backend is being turned off)."""
    current = _our_routes(ipr)
    for dst in current:
        ipr.route("del", dst=dst, table=254, proto=RTPROT_K3PY)
    return len(current)


def sync_peers(ipr: Any, backend: str, peers: list[Peer], underlay_index: int) -> int:
    """Make routes (and for vxlan, neighbours and FDB) match ``peers``; returns changes made."""
    changes = 0
    device = _index(ipr, VXLAN_DEVICE) if backend == "vxlan" else underlay_index
    if device is None:
        raise RuntimeError(f"{VXLAN_DEVICE} is missing")
    wanted: dict[str, tuple[str, int]] = {}
    for peer in peers:
        cidr = str(ipaddress.ip_network(peer.pod_cidr, strict=False))
        gateway = peer.vtep_ip if backend == "vxlan" else peer.public_ip
        wanted[cidr] = (gateway, device)
    if backend == "vxlan":
        changes += _sync_vxlan_entries(ipr, device, peers)
    current = _our_routes(ipr)
    for dst in current.keys() - wanted.keys():
        ipr.route("del", dst=dst, table=254, proto=RTPROT_K3PY)
        changes += 1
    for dst, (gateway, oif) in wanted.items():
        if current.get(dst) == (gateway, oif):
            continue
        extra = {"flags": ["onlink"]} if backend == "vxlan" else {}
        ipr.route(
            "replace", dst=dst, gateway=gateway, oif=oif, table=254, proto=RTPROT_K3PY, **extra
        )
        changes += 1
    return changes


def _sync_vxlan_entries(ipr: Any, device: int, peers: list[Peer]) -> int:
    changes = 0
    wanted_neigh = {p.vtep_ip: p.vtep_mac.lower() for p in peers}
    wanted_fdb = {p.vtep_mac.lower(): p.public_ip for p in peers}
    neigh = {
        str(n.get_attr("NDA_DST")): str(n.get_attr("NDA_LLADDR")).lower()
        for n in ipr.get_neighbours(ifindex=device, family=socket.AF_INET)
        if n["state"] & NUD_PERMANENT
    }
    fdb: dict[str, str] = {}
    for entry in ipr.fdb("dump", ifindex=device):
        if entry["ifindex"] != device or entry.get_attr("NDA_DST") is None:
            continue
        fdb[str(entry.get_attr("NDA_LLADDR")).lower()] = str(entry.get_attr("NDA_DST"))
    error = netlink_error()
    for address in neigh.keys() - wanted_neigh.keys():
        ipr.neigh("del", ifindex=device, dst=address, lladdr=neigh[address])
        changes += 1
    for mac in fdb.keys() - wanted_fdb.keys():
        with contextlib.suppress(error):  # gone with its neighbour
            ipr.fdb("del", ifindex=device, lladdr=mac, dst=fdb[mac])
        changes += 1
    for address, mac in wanted_neigh.items():
        if neigh.get(address) != mac:
            ipr.neigh("replace", ifindex=device, dst=address, lladdr=mac, state=NUD_PERMANENT)
            changes += 1
    for mac, public_ip in wanted_fdb.items():
        if fdb.get(mac) != public_ip:
            if mac in fdb:
                ipr.fdb("del", ifindex=device, lladdr=mac, dst=fdb[mac])
            ipr.fdb("append", ifindex=device, lladdr=mac, dst=public_ip)
            changes += 1
    return changes
