"""``kubectl get`` columns of custom resources and of CustomResourceDefinitions.

A custom kind prints NAME and its version's ``additionalPrinterColumns`` (or AGE when it has
none), as kube-apiserver's CRD table convertor does: each cell is the column's JSONPath
evaluated on the object (``.spec.replicas``, ``.status.conditions[0].type``,
``.status.conditions[?(@.type=="Ready")].status``), a ``date`` cell printed as an age, a
missing value as none. CRDs print NAME and CREATED AT, as kubectl shows them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from k3py.cluster.api.customresources import CustomResourceInfo
from k3py.cluster.api.printing import (
    AGE,
    NAME,
    Cells,
    Column,
    Obj,
    Printer,
    age,
    name_of,
    object_age,
)

_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\*)\]|\[\?\(@\.([\w.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")

CRD_COLUMNS = [
    NAME,
    Column(
        "Created At",
        "date",
        "CreationTimestamp is a timestamp representing the server time when this object was"
        " created.",
    ),
]


def print_crd(obj: Obj, now: datetime) -> Cells:
    return [name_of(obj), (obj.get("metadata") or {}).get("creationTimestamp")], []


def json_path(obj: Any, path: str) -> list[Any]:
    """The values a kubectl-style JSONPath (without the braces) selects in ``obj``."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    values = [obj]
    for match in _STEP.finditer(text):
        key, index, field, wanted = match.groups()
        found: list[Any] = []
        for value in values:
            if key is not None and isinstance(value, dict) and key in value:
                found.append(value[key])
            elif index == "*" and isinstance(value, list):
                found.extend(value)
            elif index is not None and index != "*" and isinstance(value, list):
                if int(index) < len(value):
                    found.append(value[int(index)])
            elif field is not None and isinstance(value, list):
                found.extend(
                    item
                    for item in value
                    if isinstance(item, dict) and str(item.get(field, "")) == wanted
                )
        values = found
    return values


def _cell(column: Column, path: str, obj: Obj, now: datetime) -> Any:
    values = json_path(obj, path)
    if not values:
        return None
    value = values[0]
    if column.type == "date":
        return age(value, now)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if column.type == "string" and not isinstance(value, str):
        return json.dumps(value)
    return value


def custom_printer(info: CustomResourceInfo) -> tuple[list[Column], Printer]:
    """The columns and printer of one custom resource version."""
    if not info.columns:
        return [NAME, AGE], lambda obj, now: ([name_of(obj), object_age(obj, now)], [])
    columns = [Column(c.name, c.type, c.description, c.priority, c.format) for c in info.columns]
    paths = [c.json_path for c in info.columns]

    def printer(obj: Obj, now: datetime) -> Cells:
        cells = [_cell(column, path, obj, now) for column, path in zip(columns, paths, strict=True)]
        return [name_of(obj), *cells], []

    return [NAME, *columns], printer
