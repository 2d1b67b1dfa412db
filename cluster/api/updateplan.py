"""The ``UpdatePlan`` kind (``ota.k3py.io/v1``, cluster-scoped): its validation, its table
columns and its OpenAPI schema.

A plan rolls one bundle version out to the nodes its ``nodeSelector`` picks, by the rules of
:mod:`k3py.cluster.ota.rollout`; its status has a phase and one entry per node. Kubernetes has
no model for it, so the OpenAPI schema is written here (the generator takes it as it is).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from k3py.cluster.api.printing import AGE, NAME, Cells, Column, Obj, as_dict, name_of, object_age
from k3py.cluster.api.validation_base import Errors

GROUP, VERSION, KIND = "ota.k3py.io", "v1", "UpdatePlan"
PHASES = ("Progressing", "Paused", "Halted", "Complete")
NODE_PHASES = ("Pending", "Downloading", "Verifying", "Installing", "Rebooting", "Healthy",
               "RolledBack", "Failed")  # fmt: skip

COLUMNS = [
    NAME,
    Column("Version", description="The bundle version the plan rolls out."),
    Column("Phase", description="Progressing, Paused, Halted or Complete."),
    Column("Healthy", description="Nodes updated and Ready, of the nodes the plan selects."),
    Column("Updating", description="Nodes between Downloading and Rebooting."),
    Column("Failed", description="Nodes Failed or RolledBack."),
    AGE,
    Column("Nodes", priority=1, description="Each started node's phase (-o wide)."),
]


def print_update_plan(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    nodes = [as_dict(n) for n in status.get("nodes") or [] if isinstance(n, dict)]
    phases = [str(n.get("phase", "Pending")) for n in nodes]
    updating = sum(p in ("Downloading", "Verifying", "Installing", "Rebooting") for p in phases)
    failed = sum(p in ("Failed", "RolledBack") for p in phases)
    healthy = f"{phases.count('Healthy')}/{len(phases)}"
    # Pending nodes are left out: with a hundred nodes the wide column shows what is moving.
    started = ",".join(f"{n.get('name')}={n.get('phase')}" for n in nodes
                       if n.get("phase", "Pending") != "Pending")  # fmt: skip
    cells = [name_of(obj), str(spec.get("version", "")), str(status.get("phase", "")), healthy,
             updating, failed, object_age(obj, now), started or "<none>"]  # fmt: skip
    return cells, []


def _non_negative(errs: Errors, path: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        errs.invalid(path, value, "must be greater than or equal to 0")


def validate_update_plan(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        errs.required("spec")
        return
    if not isinstance(spec.get("version"), str) or not spec["version"]:
        errs.required("spec.version", "the bundle version to roll out")
    unavailable = spec.get("maxUnavailable")
    if isinstance(unavailable, str):
        if not (unavailable.endswith("%") and unavailable[:-1].isdigit()):
            errs.invalid("spec.maxUnavailable", unavailable, "a count or a percentage ('25%')")
    elif unavailable is not None and (not isinstance(unavailable, int) or unavailable < 1):
        errs.invalid("spec.maxUnavailable", unavailable, "must be at least 1")
    for field in ("canary", "pauseSeconds"):
        _non_negative(errs, f"spec.{field}", spec.get(field))
    for field in ("failureThreshold", "progressDeadlineSeconds"):
        value = spec.get(field)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            errs.invalid(f"spec.{field}", value, "must be at least 1")
    selector = spec.get("nodeSelector")
    if selector is not None and not (
        isinstance(selector, dict) and all(isinstance(v, str) for v in selector.values())
    ):
        errs.invalid("spec.nodeSelector", selector, "a map of label names to values")


_PREFIX = "io.k3py.ota.v1"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _integer(description: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int32", "description": description}


def definitions() -> dict[str, dict[str, Any]]:
    """The OpenAPI v2 definitions of UpdatePlan and UpdatePlanList."""
    gvk = {"group": GROUP, "version": VERSION, "kind": KIND}
    spec = {
        "description": "What to roll out, to which nodes, how fast.",
        "type": "object",
        "required": ["version"],
        "properties": {
            "version": _string("The version of the bundle to roll out (k3py ota push)."),
            "kind": _string("The bundle kind: firmware (default) or system."),
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "Labels the plan's nodes carry (all nodes if empty)."},
            "maxUnavailable": {"type": "string", "format": "int-or-string",
                               "x-kubernetes-int-or-string": True,
                               "description": "Nodes updating at once: a count or a percentage."},
            "canary": _integer("Nodes updated first, alone, before any other starts."),
            "pauseSeconds": _integer("Seconds to wait between batches."),
            "drain": {"type": "boolean",
                      "description": "Cordon and evict pods before a node reboots."},
            "failureThreshold": _integer("Failed or rolled-back nodes that halt the plan."),
            "progressDeadlineSeconds": _integer(
                "Seconds a node may stay in one phase between Downloading and Rebooting, or "
                "be drained, before it counts as Failed (default 600)."),
        },
    }  # fmt: skip
    node = {
        "description": "One node's progress.",
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _string("The node."),
            "phase": _string("Pending, Downloading, Verifying, Installing, Rebooting, Healthy, "
                             "RolledBack or Failed."),
            "message": _string("Why the node is where it is (a refusal's reason)."),
            "lastTransitionTime": {"$ref": f"{_META}.Time",
                                   "description": "When the node entered its phase."},
        },
    }  # fmt: skip
    status = {
        "description": "The plan's progress.",
        "type": "object",
        "properties": {
            "phase": _string("Progressing, Paused, Halted or Complete."),
            "message": _string("A human-readable note on the phase."),
            "nodes": {"type": "array", "items": {"$ref": f"{_PREFIX}.UpdatePlanNode"},
                      "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "description": "Per node progress."},
        },
    }  # fmt: skip
    common = {
        "apiVersion": _string("APIVersion defines the versioned schema of this object."),
        "kind": _string("Kind is a string value representing the REST resource."),
    }
    return {
        f"{_PREFIX}.UpdatePlan": {
            "description": "UpdatePlan rolls an OTA bundle out across nodes.",
            "type": "object",
            "properties": {
                **common,
                "metadata": {"$ref": f"{_META}.ObjectMeta"},
                "spec": {"$ref": f"{_PREFIX}.UpdatePlanSpec"},
                "status": {"$ref": f"{_PREFIX}.UpdatePlanStatus"},
            },
            "x-kubernetes-group-version-kind": [gvk],
        },
        f"{_PREFIX}.UpdatePlanList": {
            "description": "UpdatePlanList is a list of UpdatePlan objects.",
            "type": "object",
            "required": ["items"],
            "properties": {
                **common,
                "metadata": {"$ref": f"{_META}.ListMeta"},
                "items": {
                    "type": "array",
                    "items": {"$ref": f"{_PREFIX}.UpdatePlan"},
                },
            },  # fmt: skip
            "x-kubernetes-group-version-kind": [{**gvk, "kind": "UpdatePlanList"}],
        },
        f"{_PREFIX}.UpdatePlanSpec": spec,
        f"{_PREFIX}.UpdatePlanStatus": status,
        f"{_PREFIX}.UpdatePlanNode": node,
    }
