"""The objects a pod refers to by name: what its node needs to read to run it.

:func:`pod_references` lists the ConfigMaps, Secrets, PersistentVolumeClaims and the
ServiceAccount a pod uses (volumes, projected sources, ``env``, ``envFrom``,
``imagePullSecrets``, ``serviceAccountName``). The server's Node authorizer grants a node read
access to exactly these for the pods bound to it, and the agent follows exactly these, so both
sides read one definition.
"""

from __future__ import annotations

from typing import Any

Object = dict[str, Any]
Reference = tuple[str, str, str]  # (resource plural, namespace, name)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def pod_references(pod: Object) -> set[Reference]:
    """(resource, namespace, name) of every object the pod refers to by name."""
    meta = _dict(pod.get("metadata"))
    spec = _dict(pod.get("spec"))
    namespace = str(meta.get("namespace") or "default")
    found: set[Reference] = set()

    def add(resource: str, name: Any) -> None:
        if isinstance(name, str) and name:
            found.add((resource, namespace, name))

    for volume in _list(spec.get("volumes")):
        add("configmaps", _dict(volume.get("configMap")).get("name"))
        add("secrets", _dict(volume.get("secret")).get("secretName"))
        add("persistentvolumeclaims", _dict(volume.get("persistentVolumeClaim")).get("claimName"))
        for source in _list(_dict(volume.get("projected")).get("sources")):
            add("configmaps", _dict(source.get("configMap")).get("name"))
            add("secrets", _dict(source.get("secret")).get("name"))
    containers = [*_list(spec.get("initContainers")), *_list(spec.get("containers"))]
    for container in [*containers, *_list(spec.get("ephemeralContainers"))]:
        for source in _list(container.get("envFrom")):
            add("configmaps", _dict(source.get("configMapRef")).get("name"))
            add("secrets", _dict(source.get("secretRef")).get("name"))
        for env in _list(container.get("env")):
            value_from = _dict(env.get("valueFrom"))
            add("configmaps", _dict(value_from.get("configMapKeyRef")).get("name"))
            add("secrets", _dict(value_from.get("secretKeyRef")).get("name"))
    for secret in _list(spec.get("imagePullSecrets")):
        add("secrets", secret.get("name"))
    add("serviceaccounts", spec.get("serviceAccountName") or spec.get("serviceAccount"))
    return found
