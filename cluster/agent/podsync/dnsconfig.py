"""What the kubelet gives a pod about services: its ``resolv.conf`` and the service variables.

``resolv.conf`` follows ``dnsPolicy`` as the kubelet does: ``ClusterFirst`` (the default) points
at the cluster DNS with the search path ``<ns>.svc.<domain> svc.<domain> <domain>`` (then the
node's own search domains) and ``ndots:5``; a host-network pod with ``ClusterFirst`` gets the
node's resolvers, unless its policy is ``ClusterFirstWithHostNet``; ``Default`` is the node's
``resolv.conf``; ``None`` is only what ``dnsConfig`` says. ``dnsConfig`` then adds nameservers
(at most three in all), search domains (at most 32) and options (a pod's option replaces the
one of the same name). The file is written into the pod's directory and bind-mounted on
``/etc/resolv.conf`` of each container.

The service variables are Docker links' shape, as the kubelet sets them for every Service of the
pod's namespace (``enableServiceLinks``, default true) and always for ``kubernetes``:
``WEB_SERVICE_HOST``, ``WEB_SERVICE_PORT``, ``WEB_SERVICE_PORT_<NAME>``, ``WEB_PORT``,
``WEB_PORT_80_TCP``, ``WEB_PORT_80_TCP_PROTO|_PORT|_ADDR``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from k3py.cluster.agent.podsync.spec import Pod, meta, spec

Object = dict[str, Any]
RESOLV_NAME = "resolv.conf"
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


class ServiceList(Protocol):
    """Where the Services come from (the agent's cache)."""

    def services_in(self, namespace: str) -> list[Object]: ...


@dataclass(frozen=True)
class DnsSettings:
    cluster_dns: str = "10.43.0.10"
    cluster_domain: str = "cluster.local"
    host_resolv_conf: Path = Path("/etc/resolv.conf")


@dataclass
class _Resolv:
    nameservers: list[str]
    searches: list[str]
    options: list[str]


def _parse(text: str) -> _Resolv:
    parsed = _Resolv([], [], [])
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            parsed.nameservers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            parsed.searches = fields[1:]
        elif fields[0] == "options":
            parsed.options += fields[1:]
    return parsed


def _host(settings: DnsSettings) -> _Resolv:
    try:
        return _parse(settings.host_resolv_conf.read_text())
    except OSError:
        return _Resolv([], [], [])


def resolv_conf(pod: Pod, settings: DnsSettings) -> str:
    pod_spec = spec(pod)
    policy = pod_spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(pod_spec.get("hostNetwork"))
    namespace = str(meta(pod).get("namespace") or "default")
    domain = settings.cluster_domain
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network):
        host = _host(settings)
        result = _Resolv(
            [settings.cluster_dns],
            [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *host.searches],
            ["ndots:5"],
        )
    elif policy == "None":
        result = _Resolv([], [], [])
    else:  # Default, or ClusterFirst on the host's network
        result = _host(settings)
    config = pod_spec.get("dnsConfig") or {}
    result.nameservers += [str(n) for n in config.get("nameservers") or []]
    result.searches += [str(s) for s in config.get("searches") or []]
    options: dict[str, str] = {}
    for option in result.options:
        options[option.split(":", 1)[0]] = option
    for entry in config.get("options") or []:
        name = str(entry.get("name") or "")
        if name:
            value = entry.get("value")
            options[name] = f"{name}:{value}" if value not in (None, "") else name
    lines = [f"nameserver {n}" for n in list(dict.fromkeys(result.nameservers))[:MAX_NAMESERVERS]]
    searches = list(dict.fromkeys(s for s in result.searches if s))[:MAX_SEARCHES]
    if searches:
        lines.append("search " + " ".join(searches))
    if options:
        lines.append("options " + " ".join(options.values()))
    return "\n".join(lines) + "\n"


def write_resolv_conf(pod_dir: Path, pod: Pod, settings: DnsSettings) -> Path:
    """The pod's resolv.conf on disk (rewritten only when its content changes)."""
    path = pod_dir / RESOLV_NAME
    text = resolv_conf(pod, settings)
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    pod_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(RESOLV_NAME + ".tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)
    temporary.replace(path)
    return path


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_").replace(".", "_")


def _variables(service: Object) -> dict[str, str]:
    spec_ = service.get("spec") or {}
    ip = spec_.get("clusterIP")
    ports = [p for p in spec_.get("ports") or [] if isinstance(p.get("port"), int)]
    if not ip or ip == "None" or spec_.get("type") == "ExternalName" or not ports:
        return {}
    prefix = _env_name(str((service.get("metadata") or {}).get("name", "")))
    first = ports[0]
    env = {
        f"{prefix}_SERVICE_HOST": ip,
        f"{prefix}_SERVICE_PORT": str(first["port"]),
        f"{prefix}_PORT": f"{str(first.get('protocol') or 'TCP').lower()}://{ip}:{first['port']}",
    }
    for port in ports:
        protocol = str(port.get("protocol") or "TCP")
        if port.get("name"):
            env[f"{prefix}_SERVICE_PORT_{_env_name(str(port['name']))}"] = str(port["port"])
        base = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
        env[base] = f"{protocol.lower()}://{ip}:{port['port']}"
        env[f"{base}_PROTO"] = protocol.lower()
        env[f"{base}_PORT"] = str(port["port"])
        env[f"{base}_ADDR"] = ip
    return env


def service_env(pod: Pod, services: ServiceList) -> dict[str, str]:
    """The service variables for a pod (the container's own ``env`` wins over them)."""
    namespace = str(meta(pod).get("namespace") or "default")
    chosen: dict[str, Object] = {}
    for service in services.services_in("default"):
        if (service.get("metadata") or {}).get("name") == "kubernetes":
            chosen["kubernetes"] = service
    if spec(pod).get("enableServiceLinks", True):
        for service in services.services_in(namespace):
            chosen[str((service.get("metadata") or {}).get("name", ""))] = service
    env: dict[str, str] = {}
    for name in sorted(chosen):
        env.update(_variables(chosen[name]))
    return env


class CachedServices:
    """:class:`ServiceList` over a mapping ``namespace/name`` → Service (the agent's cache)."""

    def __init__(self, services: Mapping[str, Object]) -> None:
        self._services = services

    def services_in(self, namespace: str) -> list[Object]:
        prefix = namespace + "/"
        return [s for key, s in self._services.items() if key.startswith(prefix)]


def static_services(services: Iterable[Object]) -> CachedServices:
    """A fixed list of Services (tests)."""
    return CachedServices(
        {
            f"{(s.get('metadata') or {}).get('namespace', 'default')}/"
            f"{(s.get('metadata') or {}).get('name', '')}": s
            for s in services
        }
    )
