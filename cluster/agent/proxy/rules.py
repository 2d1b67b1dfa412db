"""Services as nftables: k3py's own table, in the shape of kube-proxy's nftables mode.

The table has a fixed skeleton (base chains on the nat and filter hooks, and four verdict
maps) and one :class:`Fragment` per service port: its chains (``svc-…`` picks an endpoint,
``ep-…`` rewrites to it, ``ext-…`` handles NodePort and load-balancer traffic), its affinity
sets and its entries in the maps. A packet to a service costs one map lookup however many
services exist, and a change to one service touches only that service's fragment:
:func:`diff` turns two versions of some fragments into the statements of one ``nft -f``
transaction, and :func:`full_ruleset` replaces the whole table in one transaction (``add table``,
``delete table``, then the new definition), which is what a resync after a restart runs.

Maps of the skeleton (keys ``daddr . l4proto . dport`` or ``l4proto . dport``):

- ``service-ips``: cluster IPs, load-balancer ingress and external IPs → the service's chain;
- ``service-nodeports``: nodePorts on any local address (``fib daddr type local``);
- ``no-endpoint-services`` / ``no-endpoint-nodeports``: services without a ready endpoint →
  reject, checked on the filter hooks so that a client is refused at once instead of hanging.

Masquerading follows kube-proxy: traffic from outside the cluster CIDR to a cluster IP,
external traffic with ``externalTrafficPolicy: Cluster``, and hairpin traffic (a pod reaching
itself through its service) are marked and masqueraded on the way out. ``Local`` keeps the
client's address and uses only this node's endpoints. The nft command's text syntax is the
interface (libnftables' Python binding is not on PyPI), so statements are composed here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from k3py.cluster.agent.proxy.model import Endpoint, HostPort, ServicePort

MASQUERADE_MARK = 0x4000  # kube-proxy's bit, so node tooling reads it the same way
REJECT = "goto reject-chain"
MAPS = {
    "service-ips": "ipv4_addr . inet_proto . inet_service",
    "service-nodeports": "inet_proto . inet_service",
    "no-endpoint-services": "ipv4_addr . inet_proto . inet_service",
    "no-endpoint-nodeports": "inet_proto . inet_service",
}
MapKey = tuple[str, str]  # (map name, element key)


@dataclass(frozen=True)
class ProxyConfig:
    table: str = "k3py-proxy"
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


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest)[:8].decode()


def _dispatch(targets: list[str]) -> str:
    if len(targets) == 1:
        return f"goto {targets[0]}"
    entries = ", ".join(f"{i} : goto {t}" for i, t in enumerate(targets))
    return f"numgen random mod {len(targets)} vmap {{ {entries} }}"


def service_fragment(sp: ServicePort, config: ProxyConfig) -> Fragment:
    frag = Fragment()
    key, proto = sp.key, sp.protocol
    tag = _hash(key)
    svc = f"svc-{tag}-{key}"
    ext = f"ext-{tag}-{key}"
    external = bool(sp.node_port or sp.external_ips)
    if not sp.endpoints:
        frag.elements[("no-endpoint-services", f"{sp.cluster_ip} . {proto} . {sp.port}")] = REJECT
        for ip in sp.external_ips:
            frag.elements[("no-endpoint-services", f"{ip} . {proto} . {sp.port}")] = REJECT
        if sp.node_port:
            frag.elements[("no-endpoint-nodeports", f"{proto} . {sp.node_port}")] = REJECT
        return frag

    ep_chains: dict[Endpoint, str] = {}
    aff_sets: dict[Endpoint, str] = {}
    for ep in sp.endpoints:
        ep_tag = _hash(f"{key}/{ep.ip}/{ep.port}/{sp.affinity_seconds}")
        ep_chains[ep] = f"ep-{ep_tag}-{key}__{ep.ip}/{ep.port}"
        rules = [f"ip saddr {ep.ip} jump mark-for-masquerade"]
        if sp.affinity_seconds:
            aff_sets[ep] = f"affinity-{ep_tag}"
            frag.sets[aff_sets[ep]] = (
                f"{{ type ipv4_addr; flags dynamic,timeout; timeout {sp.affinity_seconds}s; }}"
            )
            rules.append(f"update @{aff_sets[ep]} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {ep.ip}:{ep.port}")
        frag.chains[ep_chains[ep]] = tuple(rules)

    def pick(endpoints: Iterable[Endpoint]) -> list[str]:
        chosen = list(endpoints)
        rules = [f"ip saddr @{aff_sets[ep]} goto {ep_chains[ep]}" for ep in chosen if aff_sets]
        rules.append(_dispatch([ep_chains[ep] for ep in chosen]))
        return rules

    svc_rules = []
    if config.cluster_cidr:
        svc_rules.append(f"ip saddr != {config.cluster_cidr} jump mark-for-masquerade")
    frag.chains[svc] = (*svc_rules, *pick(sp.endpoints))
    frag.elements[("service-ips", f"{sp.cluster_ip} . {proto} . {sp.port}")] = f"goto {svc}"
    if not external:
        return frag

    if sp.local_only:
        local = [ep for ep in sp.endpoints if ep.node_name == config.node_name]
        ext_rules = []
        if config.cluster_cidr:
            # Pods reaching a Local service go through the cluster-wide chain, as kube-proxy.
            ext_rules.append(f"ip saddr {config.cluster_cidr} goto {svc}")
        ext_rules += [
            "fib saddr type local jump mark-for-masquerade",
            f"fib saddr type local goto {svc}",
        ]
        if local:
            svl = f"svl-{tag}-{key}"
            frag.chains[svl] = tuple(pick(local))
            ext_rules.append(f"goto {svl}")
        else:
            ext_rules.append("drop")
        frag.chains[ext] = tuple(ext_rules)
    else:
        frag.chains[ext] = ("jump mark-for-masquerade", f"goto {svc}")
    for ip in sp.external_ips:
        frag.elements[("service-ips", f"{ip} . {proto} . {sp.port}")] = f"goto {ext}"
    if sp.node_port:
        frag.elements[("service-nodeports", f"{proto} . {sp.node_port}")] = f"goto {ext}"
    return frag


def host_ports_fragment(ports: Iterable[HostPort]) -> Fragment:
    """Pods' hostPorts (the CNI portmap plugin's job): one chain, rewritten as a whole."""
    rules = []
    for hp in sorted(set(ports)):
        where = f"ip daddr {hp.host_ip}" if hp.host_ip else "fib daddr type local"
        match = f"{where} meta l4proto {hp.protocol} th dport {hp.host_port}"
        rules.append(f"{match} ip saddr {hp.pod_ip} jump mark-for-masquerade")
        rules.append(f"{match} dnat to {hp.pod_ip}:{hp.container_port}")
    return Fragment(chains={"hostports": tuple(rules)})


def redirect_fragment(redirect: Redirect) -> Fragment:
    frag = Fragment()
    chain = "cluster-dns"
    frag.chains[chain] = tuple(
        f"meta l4proto {proto} dnat to {redirect.to_address}:{redirect.to_port}"
        for proto in ("udp", "tcp")
    )
    for proto in ("udp", "tcp"):
        frag.elements[("service-ips", f"{redirect.address} . {proto} . {redirect.port}")] = (
            f"goto {chain}"
        )
    return frag


def _skeleton(t: str) -> list[str]:
    mark = f"0x{MASQUERADE_MARK:x}"
    lines = [f"add table ip {t}"]
    for name, key in MAPS.items():
        lines.append(f"add map ip {t} {name} {{ type {key} : verdict; }}")
    chains = {
        "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
        "nat-output": "type nat hook output priority -100; policy accept;",
        "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
        "filter-input": "type filter hook input priority -110; policy accept;",
        "filter-forward": "type filter hook forward priority -110; policy accept;",
        "filter-output": "type filter hook output priority -110; policy accept;",
    }
    for name, spec in chains.items():
        lines.append(f"add chain ip {t} {name} {{ {spec} }}")
    for name in (
        "services",
        "hostports",
        "masquerading",
        "mark-for-masquerade",
        "endpoints-check",
        "reject-chain",
    ):
        lines.append(f"add chain ip {t} {name}")
    rules = {
        "nat-prerouting": ["jump services", "jump hostports"],
        "nat-output": ["jump services", "jump hostports"],
        "nat-postrouting": ["jump masquerading"],
        "filter-input": ["ct state new jump endpoints-check"],
        "filter-forward": ["ct state new jump endpoints-check"],
        "filter-output": ["ct state new jump endpoints-check"],
        "services": [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "fib daddr type local ip daddr != 127.0.0.0/8"
            " meta l4proto . th dport vmap @service-nodeports",
        ],
        "masquerading": [
            f"meta mark & {mark} == 0 return",
            f"meta mark set meta mark ^ {mark}",
            "masquerade fully-random",
        ],
        "mark-for-masquerade": [f"meta mark set meta mark | {mark}"],
        "endpoints-check": [
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "fib daddr type local ip daddr != 127.0.0.0/8"
            " meta l4proto . th dport vmap @no-endpoint-nodeports",
        ],
        "reject-chain": ["reject"],
    }
    for chain, chain_rules in rules.items():
        lines += [f"add rule ip {t} {chain} {rule}" for rule in chain_rules]
    return lines


def _elements(t: str, verb: str, items: Iterable[tuple[MapKey, str]]) -> list[str]:
    by_map: dict[str, list[str]] = {}
    for (name, key), value in items:
        by_map.setdefault(name, []).append(f"{key} : {value}" if value else key)
    return [
        f"{verb} element ip {t} {name} {{ {', '.join(entries)} }}"
        for name, entries in sorted(by_map.items())
    ]


def full_ruleset(config: ProxyConfig, fragments: Iterable[Fragment]) -> str:
    """The whole table, replacing whatever is there, as one transaction."""
    t = config.table
    frags = list(fragments)
    lines = [f"add table ip {t}", f"delete table ip {t}", *_skeleton(t)]
    for frag in frags:
        lines += [f"add set ip {t} {name} {spec}" for name, spec in frag.sets.items()]
        lines += [f"add chain ip {t} {name}" for name in frag.chains if name != "hostports"]
    for frag in frags:
        for name, rules in frag.chains.items():
            lines += [f"add rule ip {t} {name} {rule}" for rule in rules]
    # A later fragment wins a key two claim (two services on one external address and port).
    elements = {item: value for frag in frags for item, value in frag.elements.items()}
    lines += _elements(t, "add", elements.items())
    return "\n".join(lines) + "\n"


def delete_table(config: ProxyConfig) -> str:
    return f"add table ip {config.table}\ndelete table ip {config.table}\n"


def diff(
    config: ProxyConfig, changes: Mapping[str, tuple[Fragment | None, Fragment | None]]
) -> str:
    """The statements that turn each old fragment into its new one (None: absent), in an
    order the kernel accepts within one transaction: new objects first, rewritten chains,
    map elements, and only then the chains and sets nothing refers to any more."""
    t = config.table
    empty = Fragment()
    add_objects: list[str] = []
    rewrite: list[str] = []
    removed_elements: list[tuple[MapKey, str]] = []
    added_elements: list[tuple[MapKey, str]] = []
    drop_chains: list[str] = []
    drop_sets: list[str] = []
    for old_frag, new_frag in changes.values():
        old, new = old_frag or empty, new_frag or empty
        for name, spec in new.sets.items():
            if name not in old.sets:
                add_objects.append(f"add set ip {t} {name} {spec}")
        for name, rules in new.chains.items():
            if name in old.chains:
                if old.chains[name] == rules:
                    continue
                rewrite.append(f"flush chain ip {t} {name}")
            elif name != "hostports":
                add_objects.append(f"add chain ip {t} {name}")
            rewrite += [f"add rule ip {t} {name} {rule}" for rule in rules]
        for item, value in old.elements.items():
            if new.elements.get(item) != value:
                removed_elements.append((item, ""))
        for item, value in new.elements.items():
            if old.elements.get(item) != value:
                added_elements.append((item, value))
        for name in old.chains:
            if name not in new.chains:
                if name == "hostports":
                    rewrite.append(f"flush chain ip {t} {name}")
                else:
                    drop_chains.append(name)
        drop_sets += [name for name in old.sets if name not in new.sets]
    lines = [*add_objects, *rewrite]
    lines += _elements(t, "delete", removed_elements)
    lines += _elements(t, "add", added_elements)
    lines += [f"flush chain ip {t} {name}" for name in drop_chains]
    lines += [f"delete chain ip {t} {name}" for name in drop_chains]
    lines += [f"delete set ip {t} {name}" for name in drop_sets]
    return "\n".join(lines) + "\n" if lines else ""
