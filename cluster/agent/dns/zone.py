"""The cluster's DNS zone, answered from the agent's cache of Services and Endpoints.

Names follow Kubernetes' DNS specification (what CoreDNS's kubernetes plugin serves):

- ``<svc>.<ns>.svc.<domain>``: A with the cluster IP; for a headless Service, the ready
  endpoints' addresses; for ExternalName, a CNAME;
- ``<host>.<svc>.<ns>.svc.<domain>``: a headless Service's endpoint, by its ``hostname`` (a pod
  with ``hostname`` and ``subdomain``) or its dashed address (``10-42-1-5``);
- ``_<port>._<proto>.<svc>.<ns>.svc.<domain>`` (and SRV of the service name): SRV per named
  port, with the targets' addresses as additional records;
- ``a-b-c-d.<ns>.pod.<domain>``: A of that address;
- PTR for cluster IPs and for headless endpoints;
- anything else under the domain, or a reverse name inside the service or cluster CIDR that
  nothing owns: NXDOMAIN (with the zone's SOA, so negative answers are cached briefly).

:meth:`ClusterZone.answer` returns None for names outside the zone, which the server forwards.
The reverse index is rebuilt lazily after a change of the cache.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, A, DNSRecord

from k3py.cluster.agent.proxy.source import ServiceCache

Object = dict[str, Any]
TTL = 5  # CoreDNS's kubernetes plugin default
PACKED_ENTRIES = 4096


@dataclass(frozen=True)
class ZoneConfig:
    domain: str = "cluster.local"
    service_cidr: str = "10.43.0.0/16"
    cluster_cidr: str = "10.42.0.0/16"


def _reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def _ready_addresses(endpoints: Object | None) -> list[Object]:
    found: dict[str, Object] = {}
    for subset in (endpoints or {}).get("subsets") or []:
        for address in subset.get("addresses") or []:
            if address.get("ip"):
                found.setdefault(str(address["ip"]), address)
    return [found[ip] for ip in sorted(found)]


def _endpoint_label(address: Object) -> str:
    return str(address.get("hostname") or str(address["ip"]).replace(".", "-").replace(":", "-"))


class ClusterZone:
    def __init__(self, cache: ServiceCache, config: ZoneConfig | None = None) -> None:
        self.cache = cache
        self.config = config or ZoneConfig()
        self.domain = self.config.domain.strip(".").lower()
        self._networks = [
            ipaddress.ip_network(self.config.service_cidr, strict=False),
            ipaddress.ip_network(self.config.cluster_cidr, strict=False),
        ]
        self._reverse: dict[str, str] | None = None
        # Packed answers by (name as asked, type, EDNS payload size); emptied by any change of
        # the cache. Answering from here skips building records, the costly part of a reply.
        self._packed: dict[tuple[str, int, int], bytes] = {}
        cache.add_listener(self._changed)

    def _changed(self, _key: str) -> None:
        self._reverse = None
        self._packed.clear()

    # -- helpers -------------------------------------------------------------------------------

    def _soa(self) -> RR:
        return RR(
            self.domain + ".",
            QTYPE.SOA,
            ttl=TTL,
            rdata=SOA(
                f"ns.dns.{self.domain}.",
                f"hostmaster.{self.domain}.",
                (1, 7200, 1800, 86400, TTL),
            ),
        )

    def _reverse_index(self) -> dict[str, str]:
        if self._reverse is None:
            index: dict[str, str] = {}
            for key, service in self.cache.services.items():
                namespace, _, name = key.partition("/")
                fqdn = f"{name}.{namespace}.svc.{self.domain}."
                spec = service.get("spec") or {}
                ip = spec.get("clusterIP")
                if ip and ip != "None":
                    index[_reverse_name(ip)] = fqdn
                elif ip == "None":
                    for address in _ready_addresses(self.cache.endpoints_of(namespace, name)):
                        index.setdefault(
                            _reverse_name(address["ip"]), f"{_endpoint_label(address)}.{fqdn}"
                        )
            self._reverse = index
        return self._reverse

    def _in_reverse_zone(self, name: str) -> bool:
        if not name.endswith(".in-addr.arpa"):
            return False
        parts = name[: -len(".in-addr.arpa")].split(".")
        if len(parts) != 4:
            return False
        try:
            ip = ipaddress.ip_address(".".join(reversed(parts)))
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    # -- answering -----------------------------------------------------------------------------

    def answer_packed(self, request: DNSRecord, limit: int) -> bytes | None:
        """:meth:`answer` in wire format with the request's ID, at most ``limit`` bytes (else
        truncated, TC set); None outside the zone."""
        key = (str(request.q.qname), int(request.q.qtype), limit)
        cached = self._packed.get(key)
        if cached is None:
            reply = self.answer(request)
            if reply is None:
                return None
            packed: bytes = reply.pack()
            if len(packed) > limit:
                truncated = request.reply()
                truncated.header.tc = 1
                packed = truncated.pack()
            if len(self._packed) >= PACKED_ENTRIES:
                self._packed.clear()
            self._packed[key] = cached = packed
        return struct.pack("!H", request.header.id) + cached[2:]

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """The reply for a question inside the cluster zone, else None (to be forwarded)."""
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        if name == self.domain or name.endswith("." + self.domain):
            reply = request.reply()
            self._forward_zone(reply, name, question.qtype)
        elif self._in_reverse_zone(name):
            reply = request.reply()
            target = self._reverse_index().get(name + ".")
            if target is None:
                reply.header.rcode = RCODE.NXDOMAIN
            elif question.qtype in (QTYPE.PTR, QTYPE.ANY):
                reply.add_answer(RR(question.qname, QTYPE.PTR, ttl=TTL, rdata=PTR(target)))
        else:
            return None
        if not reply.rr:
            reply.add_auth(self._soa())
        return reply

    def _forward_zone(self, reply: DNSRecord, name: str, qtype: int) -> None:
        labels = name[: -len(self.domain)].rstrip(".").split(".") if name != self.domain else []
        qname = reply.q.qname
        if labels and labels[-1] == "pod" and len(labels) == 3:
            try:
                pod_ip = ipaddress.IPv4Address(labels[0].replace("-", "."))
            except ValueError:
                reply.header.rcode = RCODE.NXDOMAIN
                return
            if qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(qname, QTYPE.A, ttl=TTL, rdata=A(str(pod_ip))))
            return
        if not labels or labels[-1] != "svc":
            if labels and labels != ["pod"]:
                reply.header.rcode = RCODE.NXDOMAIN
            return
        rest = labels[:-1]  # without "svc"
        if not rest:
            return  # svc.<domain>: exists, no data
        namespace = rest[-1]
        if len(rest) == 1:
            if not any(k.startswith(namespace + "/") for k in self.cache.services):
                reply.header.rcode = RCODE.NXDOMAIN
            return
        service_name, prefix = rest[-2], rest[:-2]
        service = self.cache.service(namespace, service_name)
        if service is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return
        fqdn = f"{service_name}.{namespace}.svc.{self.domain}."
        spec = service.get("spec") or {}
        endpoints = self.cache.endpoints_of(namespace, service_name)
        headless = spec.get("clusterIP") == "None"
        if not prefix:
            self._service_records(reply, qtype, fqdn, spec, endpoints, headless)
        elif len(prefix) == 2 and prefix[0].startswith("_") and prefix[1].startswith("_"):
            self._srv(reply, fqdn, spec, endpoints, headless, prefix[0][1:], prefix[1][1:])
        elif len(prefix) == 1 and headless:
            matches = [a for a in _ready_addresses(endpoints) if _endpoint_label(a) == prefix[0]]
            if not matches:
                reply.header.rcode = RCODE.NXDOMAIN
            elif qtype in (QTYPE.A, QTYPE.ANY):
                for address in matches:
                    reply.add_answer(RR(qname, QTYPE.A, ttl=TTL, rdata=A(address["ip"])))
        else:
            reply.header.rcode = RCODE.NXDOMAIN

    def _service_records(
        self,
        reply: DNSRecord,
        qtype: int,
        fqdn: str,
        spec: Object,
        endpoints: Object | None,
        headless: bool,
    ) -> None:
        qname = reply.q.qname
        if spec.get("type") == "ExternalName" and spec.get("externalName"):
            target = str(spec["externalName"]).rstrip(".") + "."
            reply.add_answer(RR(qname, QTYPE.CNAME, ttl=TTL, rdata=CNAME(target)))
            return
        if qtype == QTYPE.SRV:
            self._srv(reply, fqdn, spec, endpoints, headless, None, None)
            return
        if qtype not in (QTYPE.A, QTYPE.ANY):
            return
        ips = [a["ip"] for a in _ready_addresses(endpoints)] if headless else [spec["clusterIP"]]
        for ip in ips:
            rdata = AAAA(ip) if ":" in ip else A(ip)
            reply.add_answer(RR(qname, QTYPE.AAAA if ":" in ip else QTYPE.A, ttl=TTL, rdata=rdata))

    def _srv(
        self,
        reply: DNSRecord,
        fqdn: str,
        spec: Object,
        endpoints: Object | None,
        headless: bool,
        port_name: str | None,
        protocol: str | None,
    ) -> None:
        qname = reply.q.qname
        found = False
        for port in spec.get("ports") or []:
            name = str(port.get("name") or "")
            proto = str(port.get("protocol") or "TCP").lower()
            if port_name is not None and (name != port_name or proto != protocol):
                continue
            if port_name is None and not name:
                continue
            found = True
            if not headless:
                rdata = SRV(0, 100, int(port.get("port") or 0), fqdn)
                reply.add_answer(RR(qname, QTYPE.SRV, ttl=TTL, rdata=rdata))
                ip = str(spec.get("clusterIP") or "")
                if ip:
                    reply.add_ar(RR(fqdn, QTYPE.A, ttl=TTL, rdata=A(ip)))
                continue
            for subset in (endpoints or {}).get("subsets") or []:
                numbers = [
                    p.get("port")
                    for p in subset.get("ports") or []
                    if str(p.get("name") or "") == name
                    and str(p.get("protocol") or "TCP").lower() == proto
                ]
                for number in numbers:
                    for address in subset.get("addresses") or []:
                        target = f"{_endpoint_label(address)}.{fqdn}"
                        rdata = SRV(0, 100, int(number or 0), target)
                        reply.add_answer(RR(qname, QTYPE.SRV, ttl=TTL, rdata=rdata))
                        reply.add_ar(RR(target, QTYPE.A, ttl=TTL, rdata=A(address["ip"])))
        if not found and port_name is not None:
            reply.header.rcode = RCODE.NXDOMAIN
