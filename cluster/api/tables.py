"""``kubectl get`` output: meta.k8s.io/v1 Table responses with Kubernetes' columns.

kubectl asks for ``application/json;as=Table;g=meta.k8s.io;v=v1`` and prints whatever columns
the server defines, hiding those of priority 1 unless ``-o wide``. :func:`to_table` builds
that Table for the served kinds with the columns and cell values of the API server's printers
(pods: NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES; nodes: NAME
STATUS ROLES AGE VERSION INTERNAL-IP …; see :mod:`printers_pods` and
:mod:`printers_workloads`), and a NAME AGE table for any other kind. Each row carries the
object as asked by ``includeObject``: ``Metadata`` (a PartialObjectMetadata), ``Object`` or
``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from k3py.cluster.api.cronjob import CRON_JOB_COLUMNS, print_cron_job
from k3py.cluster.api.customresources import CRD, CustomResourceInfo
from k3py.cluster.api.disruption import PDB_COLUMNS, print_pdb
from k3py.cluster.api.printers_custom import CRD_COLUMNS, custom_printer, print_crd
from k3py.cluster.api.printers_pods import NODE_COLUMNS, POD_COLUMNS, print_node, print_pod
from k3py.cluster.api.printers_workloads import (
    CONTROLLER_REVISION_COLUMNS,
    DAEMON_SET_COLUMNS,
    DEPLOYMENT_COLUMNS,
    ENDPOINTS_COLUMNS,
    EVENT_COLUMNS,
    JOB_COLUMNS,
    REPLICA_SET_COLUMNS,
    SERVICE_COLUMNS,
    print_controller_revision,
    print_daemon_set,
    print_deployment,
    print_endpoints,
    print_event,
    print_job,
    print_replica_set,
    print_service,
)
from k3py.cluster.api.printing import (
    AGE,
    NAME,
    Column,
    Obj,
    Printer,
    as_dict,
    as_list,
    human_duration,
    print_generic,
    simple_printer,
)
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import bad_request
from k3py.cluster.api.updateplan import COLUMNS as UPDATE_PLAN_COLUMNS
from k3py.cluster.api.updateplan import print_update_plan

__all__ = ["PRINTERS", "human_duration", "to_table"]


def to_table(
    info: ResourceInfo,
    objects: Iterable[Obj],
    *,
    now: datetime,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A Table of ``objects`` (all of ``info``'s kind) as the API server prints them."""
    if include_object not in ("None", "Metadata", "Object"):
        raise bad_request(
            f'includeObject: Unsupported value: "{include_object}": '
            'supported values: "None", "Metadata", "Object"'
        )
    columns: Sequence[Column]
    if isinstance(info, CustomResourceInfo):  # printed by its CRD's columns, whatever its kind
        columns, printer = custom_printer(info)
    elif info is CRD:
        columns, printer = CRD_COLUMNS, print_crd
    else:
        columns, printer = PRINTERS.get(info.kind, (_GENERIC_COLUMNS, print_generic))
    rows = []
    for obj in objects:
        cells, conditions = printer(obj, now)
        row: dict[str, Any] = {"cells": cells}
        if conditions:
            row["conditions"] = conditions
        if include_object == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": dict(obj.get("metadata") or {}),
            }
        elif include_object == "Object":
            row["object"] = {"kind": info.kind, "apiVersion": info.api_version, **obj}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [c.to_dict() for c in columns],
        "rows": rows,
    }


_GENERIC_COLUMNS = [NAME, AGE]

PRINTERS: dict[str, tuple[Sequence[Column], Printer]] = {
    "Pod": (POD_COLUMNS, print_pod),
    "Node": (NODE_COLUMNS, print_node),
    "Deployment": (DEPLOYMENT_COLUMNS, print_deployment),
    "ReplicaSet": (REPLICA_SET_COLUMNS, print_replica_set),
    "DaemonSet": (DAEMON_SET_COLUMNS, print_daemon_set),
    "Job": (JOB_COLUMNS, print_job),
    "UpdatePlan": (UPDATE_PLAN_COLUMNS, print_update_plan),
    "CronJob": (CRON_JOB_COLUMNS, print_cron_job),
    "PodDisruptionBudget": (PDB_COLUMNS, print_pdb),
    "Service": (SERVICE_COLUMNS, print_service),
    "Endpoints": (ENDPOINTS_COLUMNS, print_endpoints),
    "Event": (EVENT_COLUMNS, print_event),
    "ControllerRevision": (CONTROLLER_REVISION_COLUMNS, print_controller_revision),
    "Namespace": simple_printer(
        (
            Column("Status", description="The status of the namespace"),
            lambda o: str(as_dict(o.get("status")).get("phase") or ""),
        ),
    ),
    "ConfigMap": simple_printer(
        (
            Column("Data", description="Data contains the configuration data."),
            lambda o: len(as_dict(o.get("data"))) + len(as_dict(o.get("binaryData"))),
        ),
    ),
    "Secret": simple_printer(
        (
            Column("Type", description="Used to facilitate programmatic handling of secret data."),
            lambda o: str(o.get("type") or ""),
        ),
        (
            Column("Data", description="Data contains the secret data."),
            lambda o: len(as_dict(o.get("data"))),
        ),
    ),
    "ServiceAccount": simple_printer(
        (
            Column("Secrets", description="Secrets that pods of this ServiceAccount may use."),
            lambda o: len(as_list(o.get("secrets"))),
        ),
    ),
    "Lease": simple_printer(
        (
            Column("Holder", description="The identity of the holder of the current lease."),
            lambda o: str(as_dict(o.get("spec")).get("holderIdentity") or ""),
        ),
    ),
}
