"""PodDisruptionBudget (policy/v1): validation, the ``kubectl get pdb`` table, and the
arithmetic the disruption controller and the Eviction subresource share.

A budget names its pods by selector and says either how many must stay available
(``minAvailable``) or how many may be unavailable (``maxUnavailable``), as a number or a
percentage of the pods it covers (rounded up, as the disruption controller rounds).
:func:`budget_status` turns the covered pods into the status the API server's eviction reads:
``expectedPods``, ``currentHealthy`` (Ready pods), ``desiredHealthy`` and
``disruptionsAllowed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from k3py.cluster.api.printing import AGE, NAME, Cells, Column, Obj, as_dict, name_of, object_age
from k3py.cluster.api.validation_base import Errors, validate_label_selector


def _int_or_percent(value: Any, total: int) -> int | None:
    """A budget value against ``total`` pods (percentages round up); None if malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return math.ceil(int(value[:-1]) * total / 100)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def validate_pod_disruption_budget(errs: Errors, obj: Obj, old: Obj | None) -> None:
    spec = as_dict(obj.get("spec"))
    has_min, has_max = "minAvailable" in spec, "maxUnavailable" in spec
    if has_min and has_max:
        errs.invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")
    for field in ("minAvailable", "maxUnavailable"):
        if field not in spec:
            continue
        value = spec[field]
        parsed = _int_or_percent(value, 100)
        if parsed is None or parsed < 0:
            errs.invalid(f"spec.{field}", value, "must be a non-negative integer or percentage")
        elif isinstance(value, str) and value.endswith("%") and int(value[:-1]) > 100:
            errs.invalid(f"spec.{field}", value, "must not be greater than 100%")
    if spec.get("selector") is not None:
        validate_label_selector(errs, "spec.selector", spec.get("selector"))


def pod_is_healthy(pod: Obj) -> bool:
    status = as_dict(pod.get("status"))
    if status.get("phase") != "Running" or as_dict(pod.get("metadata")).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, dict)
    )


def budget_status(budget: Obj, pods: Sequence[Obj]) -> dict[str, Any]:
    """The counters of ``budget`` for the pods it selects (terminal pods excluded)."""
    spec = as_dict(budget.get("spec"))
    covered = [
        p for p in pods if as_dict(p.get("status")).get("phase") not in ("Succeeded", "Failed")
    ]
    expected = len(covered)
    healthy = sum(1 for p in covered if pod_is_healthy(p))
    if "maxUnavailable" in spec:
        unavailable = _int_or_percent(spec["maxUnavailable"], expected) or 0
        desired = max(0, expected - unavailable)
    else:
        desired = _int_or_percent(spec.get("minAvailable", 1), expected) or 0
    allowed = max(0, healthy - desired)
    return {
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
    }


# --- kubectl get poddisruptionbudgets ---------------------------------------------------------

PDB_COLUMNS = [
    NAME,
    Column("Min Available", description="The minimum number of pods that must be available."),
    Column("Max Unavailable", description="The maximum number of pods that may be unavailable."),
    Column(
        "Allowed Disruptions",
        type="integer",
        description="Number of pod disruptions that are currently allowed.",
    ),
    AGE,
]


def print_pdb(obj: Obj, now: datetime) -> Cells:
    spec, status = as_dict(obj.get("spec")), as_dict(obj.get("status"))
    cells: list[Any] = [
        name_of(obj),
        str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
        str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
        int(status.get("disruptionsAllowed") or 0),
        object_age(obj, now),
    ]
    return cells, []
