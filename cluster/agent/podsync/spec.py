"""From a Pod's container spec to a runtime :class:`ContainerConfig`.

This is where Kubernetes words become runtime words: ``command``/``args`` become the
entrypoint and cmd (with ``$(VAR)`` references expanded as the kubelet does), ``env`` and
``envFrom`` are resolved against ConfigMaps, Secrets and the pod's own fields, resources map
onto memory limits, CPU quota and CPU shares, and the security context onto privileged mode,
the user and a read-only root. A reference that cannot be resolved raises
:class:`ContainerConfigError`, which the pod shows as ``CreateContainerConfigError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from k3py.cluster.agent.runtime import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_HASH,
    LABEL_KIND,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    SANDBOX_NAME,
    ContainerConfig,
    ContainerKind,
    Mount,
    PortMapping,
)
from k3py.cluster.api.quantity import QuantityError, parse_quantity
from k3py.errors import K3pyError

Pod = dict[str, Any]
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ContainerConfigError(K3pyError):
    """A container's configuration references something missing (shown on the pod)."""


class ObjectSource(Protocol):
    """Where ConfigMaps and Secrets come from (the API's cache, or the local store offline)."""

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class PodContext:
    """What a container's configuration may refer to beyond its own spec."""

    node_name: str
    pod_ip: str
    host_ip: str
    sandbox_id: str
    host_network: bool = False
    # The service variables the kubelet adds (WEB_SERVICE_HOST, ...); the container's own
    # env and envFrom win over them.
    service_env: Mapping[str, str] = field(default_factory=dict)


def meta(pod: Pod) -> dict[str, Any]:
    value = pod.get("metadata")
    return value if isinstance(value, dict) else {}


def spec(pod: Pod) -> dict[str, Any]:
    value = pod.get("spec")
    return value if isinstance(value, dict) else {}


def pod_key(pod: Pod) -> str:
    return f"{meta(pod).get('namespace', 'default')}/{meta(pod).get('name', '')}"


def container_hash(container: Mapping[str, Any]) -> str:
    """A stable digest of a container's spec: a change means the container is replaced."""
    text = json.dumps(container, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labels_for(
    pod: Pod, node: str, container: str, kind: ContainerKind, attempt: int, digest: str = ""
) -> dict[str, str]:
    metadata = meta(pod)
    labels = {
        LABEL_MANAGED: "true",
        LABEL_NODE: node,
        LABEL_POD_NAME: str(metadata.get("name", "")),
        LABEL_POD_NAMESPACE: str(metadata.get("namespace", "default")),
        LABEL_POD_UID: str(metadata.get("uid", "")),
        LABEL_CONTAINER_NAME: container,
        LABEL_KIND: kind,
        LABEL_ATTEMPT: str(attempt),
    }
    if digest:
        labels[LABEL_HASH] = digest
    return labels


def runtime_name(pod: Pod, container: str, attempt: int) -> str:
    """Engine-wide unique name, in the kubelet's ``k8s_<container>_<pod>_<ns>_<uid>_<n>`` shape."""
    metadata = meta(pod)
    return (
        f"k3py_{container}_{metadata.get('name', '')}_{metadata.get('namespace', 'default')}"
        f"_{metadata.get('uid', '')}_{attempt}"
    )


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: unknown references stay as written, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def _decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(str(value)).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            continue
    for key, value in (secret.get("stringData") or {}).items():
        values[key] = str(value)
    return values


def _field_value(pod: Pod, path: str, ctx: PodContext) -> str:
    metadata = meta(pod)
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", "default"),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec(pod).get("nodeName") or ctx.node_name,
        "spec.serviceAccountName": spec(pod).get("serviceAccountName", "default"),
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    resource = str(ref.get("resource", ""))
    section, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(section) or {}).get(name)
    if raw is None:
        return "0"
    try:
        value = parse_quantity(raw)
        divisor = parse_quantity(ref.get("divisor") or "1")
    except QuantityError:
        return str(raw)
    return str(int(-(-value // divisor)))


def resolve_env(
    pod: Pod, container: Mapping[str, Any], objects: ObjectSource, ctx: PodContext
) -> dict[str, str]:
    """The container's environment, in Kubernetes' order: envFrom, then env (which wins)."""
    namespace = str(meta(pod).get("namespace", "default"))
    env: dict[str, str] = dict(ctx.service_env)
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        if "configMapRef" in source:
            ref = source["configMapRef"] or {}
            cm = objects.config_map(namespace, str(ref.get("name", "")))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref.get("name")}" not found')
            for key, value in (cm.get("data") or {}).items():
                env[prefix + key] = str(value)
        elif "secretRef" in source:
            ref = source["secretRef"] or {}
            secret = objects.secret(namespace, str(ref.get("name", "")))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref.get("name")}" not found')
            for key, value in _decode_secret(secret).items():
                env[prefix + key] = value
    for item in container.get("env") or []:
        name = str(item.get("name", ""))
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = _field_value(pod, str((source["fieldRef"] or {}).get("fieldPath")), ctx)
        elif "resourceFieldRef" in source:
            env[name] = _resource_value(container, source["resourceFieldRef"] or {})
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"] or {}
            cm = objects.config_map(namespace, str(ref.get("name", "")))
            data = (cm or {}).get("data") or {}
            if ref.get("key") in data:
                env[name] = str(data[ref["key"]])
            elif not ref.get("optional"):
                what = "not found" if cm is None else f'has no key "{ref.get("key")}"'
                raise ContainerConfigError(f'configmap "{ref.get("name")}" {what}')
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"] or {}
            secret = objects.secret(namespace, str(ref.get("name", "")))
            values = _decode_secret(secret) if secret else {}
            if ref.get("key") in values:
                env[name] = values[ref["key"]]
            elif not ref.get("optional"):
                what = "not found" if secret is None else f'has no key "{ref.get("key")}"'
                raise ContainerConfigError(f'secret "{ref.get("name")}" {what}')
    return env


def _quantity(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except QuantityError:
        return None


def _security(pod: Pod, container: Mapping[str, Any]) -> tuple[bool, str | None, bool]:
    pod_ctx = spec(pod).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    user_text = None
    if user is not None:
        user_text = f"{int(user)}:{int(group)}" if group is not None else str(int(user))
    return bool(ctx.get("privileged")), user_text, bool(ctx.get("readOnlyRootFilesystem"))


def sandbox_config(
    pod: Pod, node: str, attempt: int, image: str, *, hostname: str, network: str | None
) -> ContainerConfig:
    """The pod's sandbox: owns the network (the pod network plugs in here) and the hostname."""
    pod_spec = spec(pod)
    ports = tuple(
        PortMapping(
            int(p["containerPort"]),
            int(p["hostPort"]),
            str(p.get("protocol", "TCP")).lower(),
            str(p.get("hostIP") or ""),
        )
        for c in pod_spec.get("containers") or []
        for p in c.get("ports") or []
        # With the pod network (sandbox on "none") the service proxy forwards hostPorts.
        if p.get("hostPort") and not pod_spec.get("hostNetwork") and network != "none"
    )
    return ContainerConfig(
        name=runtime_name(pod, SANDBOX_NAME, attempt),
        image=image,
        labels=labels_for(pod, node, SANDBOX_NAME, "sandbox", attempt),
        network=network,
        hostname=None if network == "host" else hostname[:63],
        ports=ports,
    )


def container_config(
    pod: Pod,
    container: Mapping[str, Any],
    kind: ContainerKind,
    attempt: int,
    *,
    objects: ObjectSource,
    ctx: PodContext,
    mounts: tuple[Mount, ...],
) -> ContainerConfig:
    env = resolve_env(pod, container, objects, ctx)
    command = container.get("command")
    args = container.get("args")
    entrypoint = tuple(expand(str(c), env) for c in command) if command else None
    cmd: tuple[str, ...] | None = tuple(expand(str(a), env) for a in args) if args else None
    if entrypoint is not None and cmd is None:
        cmd = ()
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    memory = _quantity(limits.get("memory"))
    cpu_limit = _quantity(limits.get("cpu"))
    cpu_request = _quantity(requests.get("cpu", limits.get("cpu")))
    privileged, user, read_only = _security(pod, container)
    name = str(container.get("name", ""))
    return ContainerConfig(
        name=runtime_name(pod, name, attempt),
        image=str(container.get("image", "")),
        labels=labels_for(pod, ctx.node_name, name, kind, attempt, container_hash(container)),
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        working_dir=container.get("workingDir") or None,
        mounts=mounts,
        network=f"container:{ctx.sandbox_id}",
        memory_limit=int(memory) if memory else None,
        cpu_limit_millis=int(cpu_limit * 1000) if cpu_limit else None,
        # Kubernetes' shares: 1024 per CPU requested, at least 2.
        cpu_shares=max(2, int(cpu_request * 1024)) if cpu_request else None,
        privileged=privileged,
        user=user,
        read_only_rootfs=read_only,
        tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
    )
