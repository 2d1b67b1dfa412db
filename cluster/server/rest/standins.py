"""Minimal stand-ins for object-model pieces that have not landed yet (removed as they land).

Each function keeps the contract's signature so the REST layer switches to the real module by
changing one import.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.resources import ResourceInfo

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def apply_strategic_merge_patch(doc: Any, patch: Any, info: ResourceInfo) -> Any:
    return apply_merge_patch(doc, patch)


def apply_json_patch(doc: Any, ops: Any) -> Any:
    raise status.unsupported_media_type("application/json-patch+json")


def validate_create(info: ResourceInfo, obj: dict[str, Any]) -> list[status.Cause]:
    name = obj.get("metadata", {}).get("name", "")
    if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return [
            status.Cause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower'
                " case alphanumeric characters, '-' or '.', and must start and end with an"
                " alphanumeric character",
                "metadata.name",
            )
        ]
    return []


def validate_update(
    info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any]
) -> list[status.Cause]:
    return []


def apply_defaults(info: ResourceInfo, obj: dict[str, Any]) -> None:
    return None


def to_table(
    info: ResourceInfo,
    objects: list[dict[str, Any]],
    *,
    now: datetime,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    rows = []
    for obj in objects:
        meta = obj.get("metadata", {})
        row: dict[str, Any] = {"cells": [meta.get("name", ""), meta.get("creationTimestamp", "")]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "", "priority": 0},
        ],
        "rows": rows,
    }


def unknown_fields(api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
    return []
