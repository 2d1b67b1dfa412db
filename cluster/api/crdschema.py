"""Structural schemas of custom resources: pruning, defaulting and validation.

What kube-apiserver does with a custom object against its version's ``openAPIV3Schema``:
fields the schema does not specify are pruned (unless ``x-kubernetes-preserve-unknown-fields``;
``apiVersion``, ``kind`` and ``metadata`` at the root and in embedded resources always stay),
missing fields with a ``default`` get it, and the result is validated (type, nullable, enum,
required, bounds, lengths, pattern, item and property counts, int-or-string), each problem a
``Status`` cause with kube-apiserver's field path and wording. Hand-written: a JSON-schema
library validates draft-4 documents, but neither prunes nor defaults structural schemas, nor
phrases errors as clients of kube-apiserver expect them.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from k3py.cluster.api import status

Schema = dict[str, Any]
_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):  # beyond int64, Go's JSON decoder makes it a float64
        return "integer" if -(2**63) <= value < 2**63 else "number"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _quote(value: Any) -> str:
    """A value as Go's ``%#v``-like field errors print it: strings quoted, others as JSON."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return json.dumps(value)


# Pruning -------------------------------------------------------------------------------------


def prune(schema: Schema, obj: dict[str, Any]) -> list[str]:
    """Drop the fields ``schema`` does not specify from ``obj``; returns their paths
    (``.spec.bogus``, ``.spec.items[0].x``, ``.spec.labels[key].x``)."""
    pruned: list[str] = []
    _prune(schema, obj, "", pruned, root=True)
    return pruned


def _prune(schema: Schema, value: Any, path: str, pruned: list[str], *, root: bool = False) -> None:
    if isinstance(value, dict):
        keep_meta = root or bool(schema.get("x-kubernetes-embedded-resource"))
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        for key in list(value):
            here = f"{path}.{key}"
            if keep_meta and key in _ROOT_KEEP and not (properties and key in properties):
                continue
            if isinstance(properties, dict) and key in properties:
                _prune(properties[key], value[key], here, pruned)
            elif isinstance(additional, dict):
                _prune(additional, value[key], f"{path}[{key}]", pruned)
            elif not preserve and additional is not True:
                del value[key]
                pruned.append(here)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                _prune(items, item, f"{path}[{index}]", pruned)


# Defaulting ----------------------------------------------------------------------------------


def apply_defaults(schema: Schema, value: Any) -> None:
    """Set the ``default`` of every specified field that is missing (or null where the schema
    does not allow null), from the outside in."""
    if isinstance(value, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict):
            for key, child in properties.items():
                if not isinstance(child, dict) or "default" not in child:
                    continue
                if key not in value or (value[key] is None and not child.get("nullable")):
                    value[key] = copy.deepcopy(child["default"])
            for key, child in properties.items():
                if key in value and isinstance(child, dict):
                    apply_defaults(child, value[key])
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for item in value.values():
                apply_defaults(additional, item)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                apply_defaults(items, item)


# Validation ----------------------------------------------------------------------------------


def validate(schema: Schema, obj: dict[str, Any]) -> list[status.Cause]:
    """Every way ``obj`` breaks ``schema`` (root fields ``apiVersion``/``kind``/``metadata``
    are the generic metadata validation's)."""
    causes: list[status.Cause] = []
    body = {k: v for k, v in obj.items() if k not in _ROOT_KEEP}
    root = {**schema, "properties": {
        k: v for k, v in (schema.get("properties") or {}).items() if k not in _ROOT_KEEP
    }}  # fmt: skip
    root["required"] = [r for r in schema.get("required") or [] if r not in _ROOT_KEEP]
    _validate(root, body, "", causes)
    return causes


def validate_value(schema: Schema, value: Any, path: str) -> list[status.Cause]:
    """Every way ``value`` (found at ``path``) breaks ``schema``."""
    causes: list[status.Cause] = []
    _validate(schema, value, path, causes)
    return causes


def _invalid(path: str, value: Any, detail: str) -> status.Cause:
    return status.Cause("FieldValueInvalid", f"Invalid value: {_quote(value)}: {detail}", path)


def _type_ok(schema: Schema, value: Any) -> bool:
    wanted = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int | str)) and not isinstance(value, bool)
    if not wanted:
        return True
    actual = _type_name(value)
    return actual == wanted or (wanted == "number" and actual == "integer")


def _validate(schema: Schema, value: Any, path: str, causes: list[status.Cause]) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable") and (
            schema.get("type") or schema.get("x-kubernetes-int-or-string")
        ):
            wanted = schema.get("type") or "integer or string"
            causes.append(
                _invalid(where, "null", f'{where} in body must be of type {wanted}: "null"')
            )
        return
    if not _type_ok(schema, value):
        wanted = schema.get("type") or "integer or string"
        actual = _type_name(value)
        causes.append(
            _invalid(where, actual, f'{where} in body must be of type {wanted}: "{actual}"')
        )
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        supported = ", ".join(_quote(e) for e in enum)
        causes.append(
            status.Cause(
                "FieldValueNotSupported",
                f"Unsupported value: {_quote(value)}: supported values: {supported}",
                where,
            )
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        _bounds(schema, value, where, causes)
    elif isinstance(value, str):
        _string(schema, value, where, causes)
    elif isinstance(value, list):
        _array(schema, value, path, causes)
    elif isinstance(value, dict):
        _object(schema, value, path, causes)


def _bounds(schema: Schema, value: float, where: str, causes: list[status.Cause]) -> None:
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    if isinstance(minimum, int | float):
        if schema.get("exclusiveMinimum") and value <= minimum:
            causes.append(
                _invalid(where, value, f"{where} in body should be greater than {minimum}")
            )
        elif value < minimum:
            causes.append(
                _invalid(
                    where, value, f"{where} in body should be greater than or equal to {minimum}"
                )
            )
    if isinstance(maximum, int | float):
        if schema.get("exclusiveMaximum") and value >= maximum:
            causes.append(_invalid(where, value, f"{where} in body should be less than {maximum}"))
        elif value > maximum:
            causes.append(
                _invalid(where, value, f"{where} in body should be less than or equal to {maximum}")
            )
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple and value % multiple:
        causes.append(_invalid(where, value, f"{where} in body should be a multiple of {multiple}"))


def _string(schema: Schema, value: str, where: str, causes: list[status.Cause]) -> None:
    if schema.get("x-kubernetes-int-or-string") and not schema.get("type"):
        return
    min_length, max_length = schema.get("minLength"), schema.get("maxLength")
    if isinstance(min_length, int) and len(value) < min_length:
        causes.append(
            _invalid(where, value, f"{where} in body should be at least {min_length} chars long")
        )
    if isinstance(max_length, int) and len(value) > max_length:
        causes.append(
            status.Cause(
                "FieldValueTooLong", f"Too long: may not be more than {max_length} bytes", where
            )
        )
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True  # a pattern Python cannot read is not the object's fault
        if not matched:
            causes.append(_invalid(where, value, f"{where} in body should match '{pattern}'"))


def _array(schema: Schema, value: list[Any], path: str, causes: list[status.Cause]) -> None:
    where = path or "<root>"
    min_items, max_items = schema.get("minItems"), schema.get("maxItems")
    if isinstance(min_items, int) and len(value) < min_items:
        causes.append(
            _invalid(where, len(value), f"{where} in body should have at least {min_items} items")
        )
    if isinstance(max_items, int) and len(value) > max_items:
        causes.append(
            status.Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {max_items} items",
                where,
            )
        )
    if schema.get("x-kubernetes-list-type") == "set":
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                causes.append(
                    status.Cause(
                        "FieldValueDuplicate",
                        f"Duplicate value: {_quote(item)}",
                        f"{path}[{index}]",
                    )
                )
            seen.append(item)
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(items, item, f"{path}[{index}]", causes)


def _object(schema: Schema, value: dict[str, Any], path: str, causes: list[status.Cause]) -> None:
    prefix = f"{path}." if path else ""
    for name in schema.get("required") or []:
        if name not in value:
            causes.append(status.Cause("FieldValueRequired", "Required value", prefix + name))
    min_props, max_props = schema.get("minProperties"), schema.get("maxProperties")
    where = path or "<root>"
    if isinstance(min_props, int) and len(value) < min_props:
        causes.append(
            _invalid(
                where, len(value), f"{where} in body should have at least {min_props} properties"
            )
        )
    if isinstance(max_props, int) and len(value) > max_props:
        causes.append(
            status.Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {max_props} items",
                where,
            )
        )
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        child = properties.get(key)
        if isinstance(child, dict):
            _validate(child, item, prefix + key, causes)
        elif isinstance(additional, dict):
            _validate(additional, item, f"{path}[{key}]" if path else key, causes)
