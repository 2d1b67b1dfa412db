"""Services as nftables, in the shape of kube-proxy's nftables mode.

The rules live in k3py's table ``inet k3py``, which the agent's parts share by name prefix
(see :mod:`k3py.cluster.agent.network.nft`): every chain, set and map of the proxy starts with
``svc-``. There is a fixed skeleton (base chains on the nat and filter hooks, four verdict maps
and the hairpin set) and one :class:`Fragment` per service port.

A plain service port (a cluster IP only, no ClientIP affinity) owns no chain, only map
elements: ``svc-service-ips`` sends it to ``svc-pick-N``, shared by every service with N ready
endpoints, whose one rule rewrites to ``svc-endpoints-N[daddr . l4proto . dport . numgen random
mod N]`` (keys of the service's address and port and its endpoint's index). The pick chains and
maps exist while a service uses them (the proxier counts users). Keeping chains per service out
is what keeps a change cheap: Debian 12's nft 1.0.6 reads every chain of the table before each
batch, so a chain per service made each transaction's cost grow with the number of services.
Other service ports keep chains of their own (``svc-s-…`` picks an endpoint with ``numgen
random`` from an inline map of addresses; ``svc-e-…``, one per endpoint, only with ClientIP
affinity, whose timed sets remember clients; ``svc-x-…`` handles NodePort and load-balancer
traffic, ``svc-l-…`` the node's own endpoints for ``externalTrafficPolicy: Local``) beside
their entries in the maps and the hairpin set. A packet to a service costs one or two map
lookups however many services exist, and a change to one service touches only that service's
fragment:
:func:`diff` turns two versions of some fragments into the statements of one ``nft -f``
transaction, and :func:`full_ruleset` replaces all of the proxy's objects in one transaction
(everything named ``svc-…`` that the table holds is flushed and deleted, then defined anew),
which is what a resync after a restart runs; the other parts' chains are not touched.

Maps of the skeleton (keys ``daddr . l4proto . dport`` or ``l4proto . dport``):

- ``svc-service-ips``: cluster IPs, load-balancer ingress and external IPs → the service's chain;
- ``svc-service-nodeports``: nodePorts on any local address (``fib daddr type local``);
- ``svc-no-endpoint-services`` / ``svc-no-endpoint-nodeports``: services without a ready
  endpoint → reject, checked on the filter hooks so that a client is refused at once instead of
  hanging;
- ``svc-hairpin`` (a set of ``endpoint . endpoint`` pairs): connections that a service sent
  back to their own source are masqueraded (several services may share an element; the
  proxier counts its users).

Masquerading follows kube-proxy: traffic from outside the cluster CIDR to a cluster IP,
external traffic with ``externalTrafficPolicy: Cluster``, and hairpin traffic (a pod reaching
itself through its service) are marked and masqueraded on the way out. ``Local`` keeps the
client's address and uses only this node's endpoints. The nft command's text syntax is the
interface (libnftables' Python binding is not on PyPI), so statements are composed here.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from k3py.cluster.agent.proxy.model import Endpoint, HostPort, ServicePort

PREFIX = "svc-"
MASQUERADE_MARK = 0x4000  # kube-proxy's bit, so node tooling reads it the same way
REJECT = "goto svc-reject"
SERVICE_IPS = "svc-service-ips"
NODE_PORTS = "svc-service-nodeports"
NO_ENDPOINT_IPS = "svc-no-endpoint-services"
NO_ENDPOINT_PORTS = "svc-no-endpoint-nodeports"
HAIRPIN = "svc-hairpin"
HOST_PORTS_CHAIN = "svc-hostports"
DNS_GUARD_CHAIN = "svc-dns-guard"
# Chains of the skeleton that a fragment fills (flushed, never created or deleted by it).
FIXED_CHAINS = (HOST_PORTS_CHAIN, DNS_GUARD_CHAIN)
MAPS = {
    SERVICE_IPS: "ipv4_addr . inet_proto . inet_service",
    NODE_PORTS: "inet_proto . inet_service",
    NO_ENDPOINT_IPS: "ipv4_addr . inet_proto . inet_service",
    NO_ENDPOINT_PORTS: "inet_proto . inet_service",
}
MapKey = tuple[str, str]  # (map name, element key)
PICK_USERS = "@pick"  # users of svc-pick-N are counted under (PICK_USERS, "N")


def pick_chain(n: int) -> str:
    return f"svc-pick-{n}"


def pick_map(n: int) -> str:
    return f"svc-endpoints-{n}"


@dataclass(frozen=True)
class ProxyConfig:
    table: str = "inet k3py"  # family and name, shared with the pod network
    node_name: str = ""
    cluster_cidr: str = "10.42.0.0/16"


@dataclass(frozen=True)
class Redirect:
    """Traffic to ``address:port`` (both protocols) is delivered to a listener on this node:
    the node-local cluster DNS."""

    address: str
    port: int
    to_address: str
    to_port: int


@dataclass
class Fragment:
    """One service port's (or the host ports', or the DNS redirect's) part of the table."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    elements: dict[MapKey, str] = field(default_factory=dict)
    picks: set[int] = field(default_factory=set)  # svc-pick-N objects it refers to


@dataclass(frozen=True)
class Existing:
    """The proxy's objects found in the table (what a full resync must replace)."""

    chains: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    maps: tuple[str, ...] = ()


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest)[:8].decode().lower()


def _dispatch(targets: list[str]) -> str:
    if len(targets) == 1:
        return f"goto {targets[0]}"
    entries = ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets))
    return f"numgen random mod {len(targets)} vmap {{ {entries} }}"


def service_fragment(sp: ServicePort, config: ProxyConfig) -> Fragment:
    frag = Fragment()
    key, proto = sp.key, sp.protocol
    tag = _hash(key)
    svc = f"svc-s-{tag}-{key}"
    ext = f"svc-x-{tag}-{key}"
    external = bool(sp.node_port or sp.external_ips)
    if not sp.endpoints:
        frag.elements[(NO_ENDPOINT_IPS, f"{sp.cluster_ip} . {proto} . {sp.port}")] = REJECT
        for ip in sp.external_ips:
            frag.elements[(NO_ENDPOINT_IPS, f"{ip} . {proto} . {sp.port}")] = REJECT
        if sp.node_port:
            frag.elements[(NO_ENDPOINT_PORTS, f"{proto} . {sp.node_port}")] = REJECT
        return frag

    # Hairpin: a pod reaching itself through its service is masqueraded on the way out (one
    # set of (endpoint, endpoint) pairs, shared by all services; the proxier counts users).
    for ep in sp.endpoints:
        frag.elements[(HAIRPIN, f"{ep.ip} . {ep.ip}")] = ""
    ep_chains: dict[Endpoint, str] = {}
    aff_sets: dict[Endpoint, str] = {}
    if sp.affinity_seconds:
        # ClientIP affinity needs a chain per endpoint (its set of recent clients).
        for ep in sp.endpoints:
            ep_tag = _hash(f"{key}/{ep.ip}/{ep.port}/{sp.affinity_seconds}")
            ep_chains[ep] = f"svc-e-{ep_tag}-{key}__{ep.ip}/{ep.port}"
            aff_sets[ep] = f"svc-affinity-{ep_tag}"
            frag.sets[aff_sets[ep]] = (
                f"{{ type ipv4_addr; flags dynamic,timeout; timeout {sp.affinity_seconds}s; }}"
            )
            frag.chains[ep_chains[ep]] = (
                f"update @{aff_sets[ep]} {{ ip saddr }}",
                f"meta l4proto {proto} dnat ip to {ep.ip}:{ep.port}",
            )

    def pick(endpoints: Iterable[Endpoint]) -> list[str]:
        chosen = list(endpoints)
        if aff_sets:
            rules = [f"ip saddr @{aff_sets[ep]} goto {ep_chains[ep]}" for ep in chosen]
            return [*rules, _dispatch([ep_chains[ep] for ep in chosen])]
        # Without affinity the endpoint is picked and written in one rule (a map of
        # addresses), so a service costs one chain whatever its number of endpoints.
        if len(chosen) == 1:
            return [f"meta l4proto {proto} dnat ip to {chosen[0].ip}:{chosen[0].port}"]
        entries = ", ".join(f"{i} : {ep.ip} . {ep.port}" for i, ep in enumerate(chosen))
        return [
            f"meta l4proto {proto} dnat ip addr . port to numgen random mod {len(chosen)}"
            f" map {{ {entries} }}"
        ]

    if not sp.affinity_seconds and not external:
        n = len(sp.endpoints)
        frag.picks.add(n)
        frag.elements[(SERVICE_IPS, f"{sp.cluster_ip} . {proto} . {sp.port}")] = (
            f"goto {pick_chain(n)}"
        )
        for i, ep in enumerate(sp.endpoints):
            item = (pick_map(n), f"{sp.cluster_ip} . {proto} . {sp.port} . {i}")
            frag.elements[item] = f"{ep.ip} . {ep.port}"
        return frag

    svc_rules = []
    if config.cluster_cidr:
        svc_rules.append(f"ip saddr != {config.cluster_cidr} jump svc-mark-for-masquerade")
    frag.chains[svc] = (*svc_rules, *pick(sp.endpoints))
    frag.elements[(SERVICE_IPS, f"{sp.cluster_ip} . {proto} . {sp.port}")] = f"goto {svc}"
    if not external:
        return frag

    if sp.local_only:
        local = [ep for ep in sp.endpoints if ep.node_name == config.node_name]
        ext_rules = []
        if config.cluster_cidr:
            # Pods reaching a Local service go through the cluster-wide chain, as kube-proxy.
            ext_rules.append(f"ip saddr {config.cluster_cidr} goto {svc}")
        ext_rules += [
            "fib saddr type local jump svc-mark-for-masquerade",
            f"fib saddr type local goto {svc}",
        ]
        if local:
            svl = f"svc-l-{tag}-{key}"
            frag.chains[svl] = tuple(pick(local))
            ext_rules.append(f"goto {svl}")
        else:
            ext_rules.append("drop")
        frag.chains[ext] = tuple(ext_rules)
    else:
        frag.chains[ext] = ("jump svc-mark-for-masquerade", f"goto {svc}")
    for ip in sp.external_ips:
        frag.elements[(SERVICE_IPS, f"{ip} . {proto} . {sp.port}")] = f"goto {ext}"
    if sp.node_port:
        frag.elements[(NODE_PORTS, f"{proto} . {sp.node_port}")] = f"goto {ext}"
    return frag


def host_ports_fragment(ports: Iterable[HostPort]) -> Fragment:
    """Pods' hostPorts (the CNI portmap plugin's job): one chain, rewritten as a whole."""
    rules = []
    for hp in sorted(set(ports)):
        where = f"ip daddr {hp.host_ip}" if hp.host_ip else "fib daddr type local"
        match = f"{where} meta l4proto {hp.protocol} th dport {hp.host_port}"
        rules.append(f"{match} ip saddr {hp.pod_ip} jump svc-mark-for-masquerade")
        rules.append(
            f"{match} meta l4proto {hp.protocol} dnat ip to {hp.pod_ip}:{hp.container_port}"
        )
    return Fragment(chains={HOST_PORTS_CHAIN: tuple(rules)})


def redirect_fragment(redirect: Redirect) -> Fragment:
    frag = Fragment()
    chain = "svc-cluster-dns"
    frag.chains[chain] = tuple(
        f"meta l4proto {proto} dnat ip to {redirect.to_address}:{redirect.to_port}"
        for proto in ("udp", "tcp")
    )
    for proto in ("udp", "tcp"):
        frag.elements[(SERVICE_IPS, f"{redirect.address} . {proto} . {redirect.port}")] = (
            f"goto {chain}"
        )
    # Only redirected queries may reach the listener: the node is no resolver for its LAN.
    listener = (
        f"ip daddr {redirect.to_address} meta l4proto {{ tcp, udp }} th dport {redirect.to_port}"
    )
    frag.chains[DNS_GUARD_CHAIN] = (f"{listener} ct status dnat return", f"{listener} drop")
    return frag


BASE_CHAINS = {
    "svc-nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "svc-nat-output": "type nat hook output priority -100; policy accept;",
    "svc-nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "svc-filter-input": "type filter hook input priority -110; policy accept;",
    "svc-filter-forward": "type filter hook forward priority -110; policy accept;",
    "svc-filter-output": "type filter hook output priority -110; policy accept;",
}
MARK = f"0x{MASQUERADE_MARK:x}"
SKELETON_RULES = {
    "svc-nat-prerouting": ["jump svc-services", f"jump {HOST_PORTS_CHAIN}"],
    "svc-nat-output": ["jump svc-services", f"jump {HOST_PORTS_CHAIN}"],
    "svc-nat-postrouting": [
        f"ct status dnat ip saddr . ip daddr @{HAIRPIN} masquerade fully-random",
        "jump svc-masquerading",
    ],
    "svc-filter-input": ["ct state new jump svc-endpoints-check", f"jump {DNS_GUARD_CHAIN}"],
    "svc-filter-forward": ["ct state new jump svc-endpoints-check"],
    "svc-filter-output": ["ct state new jump svc-endpoints-check"],
    "svc-services": [
        f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
        f"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{NODE_PORTS}",
    ],
    "svc-masquerading": [
        f"meta mark & {MARK} == 0 return",
        f"meta mark set meta mark ^ {MARK}",
        "masquerade fully-random",
    ],
    "svc-mark-for-masquerade": [f"meta mark set meta mark | {MARK}"],
    "svc-endpoints-check": [
        f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_IPS}",
        "fib daddr type local ip daddr != 127.0.0.0/8"
        f" meta l4proto . th dport vmap @{NO_ENDPOINT_PORTS}",
    ],
    "svc-reject": ["reject"],
}


def _skeleton(t: str) -> list[str]:
    lines = [f"add map {t} {name} {{ type {key} : verdict; }}" for name, key in MAPS.items()]
    lines.append(f"add set {t} {HAIRPIN} {{ type ipv4_addr . ipv4_addr; }}")
    lines += [f"add chain {t} {name} {{ {spec} }}" for name, spec in BASE_CHAINS.items()]
    lines += [f"add chain {t} {name}" for name in SKELETON_RULES if name not in BASE_CHAINS]
    lines += [f"add chain {t} {name}" for name in FIXED_CHAINS]
    for chain, chain_rules in SKELETON_RULES.items():
        lines += [f"add rule {t} {chain} {rule}" for rule in chain_rules]
    return lines


def _pick_objects(config: ProxyConfig, n: int) -> list[str]:
    """The chain and map shared by the plain service ports with ``n`` ready endpoints."""
    t, chain, name = config.table, pick_chain(n), pick_map(n)
    key = f"ip daddr . meta l4proto . th dport . numgen random mod {n}"
    lines = [
        f"add map {t} {name} {{ typeof {key} : ip daddr . th dport; }}",
        f"add chain {t} {chain}",
    ]
    if config.cluster_cidr:
        lines.append(
            f"add rule {t} {chain} ip saddr != {config.cluster_cidr} jump svc-mark-for-masquerade"
        )
    lines.append(
        f"add rule {t} {chain} meta l4proto {{ tcp, udp }} dnat ip addr . port to {key} map @{name}"
    )
    return lines


def _drop_pick(config: ProxyConfig, n: int) -> list[str]:
    t = config.table
    return [
        f"flush chain {t} {pick_chain(n)}",
        f"delete chain {t} {pick_chain(n)}",
        f"delete map {t} {pick_map(n)}",
    ]


def _elements(t: str, verb: str, items: Iterable[tuple[MapKey, str]]) -> list[str]:
    by_map: dict[str, list[str]] = {}
    for (name, key), value in items:
        by_map.setdefault(name, []).append(f"{key} : {value}" if value else key)
    return [
        f"{verb} element {t} {name} {{ {', '.join(entries)} }}"
        for name, entries in sorted(by_map.items())
    ]


def removal(config: ProxyConfig, existing: Existing) -> list[str]:
    """Statements deleting the proxy's objects found in the table, references first: rules
    (chains flushed), then maps and sets, then the chains themselves."""
    t = config.table
    chains = [c for c in existing.chains if c.startswith(PREFIX)]
    lines = [f"flush chain {t} {name}" for name in chains]
    lines += [f"delete map {t} {name}" for name in existing.maps if name.startswith(PREFIX)]
    lines += [f"delete set {t} {name}" for name in existing.sets if name.startswith(PREFIX)]
    lines += [f"delete chain {t} {name}" for name in chains]
    return lines


def full_ruleset(config: ProxyConfig, fragments: Iterable[Fragment], existing: Existing) -> str:
    """All of the proxy's objects, replacing the ones in the table, as one transaction."""
    t = config.table
    frags = list(fragments)
    lines = [f"add table {t}", *removal(config, existing), *_skeleton(t)]
    for n in sorted({n for frag in frags for n in frag.picks}):
        lines += _pick_objects(config, n)
    for frag in frags:
        lines += [f"add set {t} {name} {spec}" for name, spec in frag.sets.items()]
        lines += [f"add chain {t} {name}" for name in frag.chains if name not in FIXED_CHAINS]
    for frag in frags:
        for name, rules in frag.chains.items():
            lines += [f"add rule {t} {name} {rule}" for rule in rules]
    # A later fragment wins a key two claim (two services on one external address and port).
    elements = {item: value for frag in frags for item, value in frag.elements.items()}
    lines += _elements(t, "add", elements.items())
    return "\n".join(lines) + "\n"


def set_element_users(fragments: Iterable[Fragment]) -> Counter[MapKey]:
    """How many fragments want each set element (elements several services share) and each
    pick chain (counted under ``(PICK_USERS, "N")``)."""
    users: Counter[MapKey] = Counter()
    for frag in fragments:
        users.update(item for item, value in frag.elements.items() if not value)
        users.update((PICK_USERS, str(n)) for n in frag.picks)
    return users


def diff(
    config: ProxyConfig,
    changes: Mapping[str, tuple[Fragment | None, Fragment | None]],
    users: Counter[MapKey] | None = None,
) -> str:
    """The statements that turn each old fragment into its new one (None: absent), in an
    order the kernel accepts within one transaction: new objects first, rewritten chains,
    map elements, and only then the chains and sets nothing refers to any more. ``users``
    (updated in place) counts the fragments holding each set element: a shared element is
    added by its first user and deleted with its last, and so is a pick chain with its map."""
    t = config.table
    empty = Fragment()
    add_objects: list[str] = []
    rewrite: list[str] = []
    removed_elements: list[tuple[MapKey, str]] = []
    added_elements: list[tuple[MapKey, str]] = []
    drop_chains: list[str] = []
    drop_sets: list[str] = []
    pick_delta: Counter[int] = Counter()
    for old_frag, new_frag in changes.values():
        old, new = old_frag or empty, new_frag or empty
        pick_delta.update(new.picks)
        pick_delta.subtract(old.picks)
        for name, spec in new.sets.items():
            if name not in old.sets:
                add_objects.append(f"add set {t} {name} {spec}")
        for name, rules in new.chains.items():
            if name in old.chains:
                if old.chains[name] == rules:
                    continue
                rewrite.append(f"flush chain {t} {name}")
            elif name not in FIXED_CHAINS:
                add_objects.append(f"add chain {t} {name}")
            rewrite += [f"add rule {t} {name} {rule}" for rule in rules]
        for item, value in old.elements.items():
            if new.elements.get(item) != value:
                if not value and users is not None:
                    users[item] -= 1
                    if users[item] > 0:
                        continue
                    del users[item]
                removed_elements.append((item, ""))
        for item, value in new.elements.items():
            if old.elements.get(item) != value:
                if not value and users is not None:
                    users[item] += 1
                    if users[item] > 1:
                        continue
                added_elements.append((item, value))
        for name in old.chains:
            if name not in new.chains:
                if name in FIXED_CHAINS:
                    rewrite.append(f"flush chain {t} {name}")
                else:
                    drop_chains.append(name)
        drop_sets += [name for name in old.sets if name not in new.sets]
    # A pick chain is created by the batch that gives it its first user and deleted by the
    # one that takes its last (without ``users``, the changed fragments are all its users).
    drop_picks: list[int] = []
    for n, delta in sorted(pick_delta.items()):
        item = (PICK_USERS, str(n))
        if users is not None:
            before = users[item]
            users[item] += delta
            if users[item] <= 0:
                del users[item]
        else:
            before = sum(n in (o or empty).picks for o, _ in changes.values())
        after = before + delta
        if before <= 0 < after:
            add_objects += _pick_objects(config, n)
        elif after <= 0 < before:
            drop_picks.append(n)
    lines = [*add_objects, *rewrite]
    lines += _elements(t, "delete", removed_elements)
    lines += _elements(t, "add", added_elements)
    for n in drop_picks:
        lines += _drop_pick(config, n)
    lines += [f"flush chain {t} {name}" for name in drop_chains]
    lines += [f"delete chain {t} {name}" for name in drop_chains]
    lines += [f"delete set {t} {name}" for name in drop_sets]
    return "\n".join(lines) + "\n" if lines else ""
