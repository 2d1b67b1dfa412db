"""Look up a served kind's ResourceInfo by kind name, for the object model tests."""

from __future__ import annotations

from k3py.cluster.api.resources import RESOURCES, ResourceInfo


def info(kind: str) -> ResourceInfo:
    for resource in RESOURCES:
        if resource.kind == kind:
            return resource
    raise LookupError(f"{kind} is not a served kind")
