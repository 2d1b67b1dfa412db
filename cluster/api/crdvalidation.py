"""Validation of a CustomResourceDefinition itself, as kube-apiserver's apiextensions rules.

The rules users meet: the name is ``<plural>.<group>``, the group has a dot, the names are
lowercase labels, the scope is Cluster or Namespaced, exactly one storage version and no
duplicate version names, only the ``None`` conversion, and every version has a structural
schema (an object at the root; every specified field typed unless it is an int-or-string or
keeps unknown fields; arrays say what their items are; defaults valid against their schema).
Every field is also checked for its JSON type, so a malformed CRD is a 422 with the field's
path, never an error of the server that later reads it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from k3py.cluster.api import crdschema, status

Object = dict[str, Any]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TYPES = ("object", "array", "string", "integer", "number", "boolean")
_COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")
# Schema keywords and the JSON type of their values.
_SCHEMA_KEYS: dict[str, tuple[type, ...]] = {
    "type": (str,),
    "description": (str,),
    "format": (str,),
    "title": (str,),
    "pattern": (str,),
    "required": (list,),
    "enum": (list,),
    "minimum": (int, float),
    "maximum": (int, float),
    "multipleOf": (int, float),
    "exclusiveMinimum": (bool,),
    "exclusiveMaximum": (bool,),
    "minLength": (int,),
    "maxLength": (int,),
    "minItems": (int,),
    "maxItems": (int,),
    "minProperties": (int,),
    "maxProperties": (int,),
    "uniqueItems": (bool,),
    "nullable": (bool,),
    "properties": (dict,),
    "items": (dict,),
    "additionalProperties": (dict, bool),
    "x-kubernetes-preserve-unknown-fields": (bool,),
    "x-kubernetes-int-or-string": (bool,),
    "x-kubernetes-embedded-resource": (bool,),
    "x-kubernetes-list-type": (str,),
    "x-kubernetes-map-type": (str,),
    "x-kubernetes-list-map-keys": (list,),
}
_JSON_NAMES = {str: "string", list: "array", dict: "object", bool: "boolean", int: "integer"}


def _cause(path: str, message: str, reason: str = "FieldValueInvalid") -> status.Cause:
    return status.Cause(reason, message, path)


def _required(path: str) -> status.Cause:
    return _cause(path, "Required value", "FieldValueRequired")


def _typed(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _check_type(causes: list[status.Cause], path: str, value: Any, *kinds: type) -> bool:
    """Whether ``value`` is absent or of one of ``kinds``; a cause when it is of another."""
    if value is None or _typed(value, kinds):
        return value is not None
    wanted = " or ".join(_JSON_NAMES.get(k, "number") for k in kinds)
    causes.append(
        _cause(path, f"Invalid value: {json.dumps(value)[:80]}: must be of type {wanted}")
    )
    return False


def _strings(causes: list[status.Cause], path: str, value: Any) -> None:
    if _check_type(causes, path, value, list):
        for index, item in enumerate(value):
            _check_type(causes, f"{path}[{index}]", item, str)


def validate_crd(crd: Object) -> list[status.Cause]:
    """What kube-apiserver refuses in a CustomResourceDefinition, with its field paths."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [_required("spec")]
    causes: list[status.Cause] = []
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        causes.append(_required("spec.group"))
    elif "." not in group:
        causes.append(
            _cause(
                "spec.group", f'Invalid value: "{group}": should be a domain with at least one dot'
            )
        )
    names = spec.get("names")
    if not isinstance(names, dict):
        names = {}
        causes.append(_required("spec.names"))
    plural, kind = names.get("plural"), names.get("kind")
    for key in ("plural", "singular"):
        value = names.get(key)
        if key == "plural" and not value:
            causes.append(_required("spec.names.plural"))
        elif _check_type(causes, f"spec.names.{key}", value, str) and not _DNS_LABEL.match(
            str(value)
        ):
            causes.append(
                _cause(
                    f"spec.names.{key}",
                    f'Invalid value: "{value}": a lowercase RFC 1123 label must consist of lower'
                    " case alphanumeric characters or '-'",
                )
            )
    if not kind:
        causes.append(_required("spec.names.kind"))
    _check_type(causes, "spec.names.kind", kind, str)
    _check_type(causes, "spec.names.listKind", names.get("listKind"), str)
    _strings(causes, "spec.names.shortNames", names.get("shortNames"))
    _strings(causes, "spec.names.categories", names.get("categories"))
    name = (crd.get("metadata") or {}).get("name")
    if isinstance(plural, str) and isinstance(group, str) and name != f"{plural}.{group}":
        causes.append(
            _cause(
                "metadata.name",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    scope = spec.get("scope")
    if scope not in ("Cluster", "Namespaced"):
        causes.append(
            _cause(
                "spec.scope",
                f'Unsupported value: {json.dumps(scope or "")}: supported values: "Cluster",'
                ' "Namespaced"',
                "FieldValueNotSupported",
            )
        )
    causes.extend(_validate_versions(spec.get("versions")))
    conversion = spec.get("conversion")
    if _check_type(causes, "spec.conversion", conversion, dict) and isinstance(conversion, dict):
        strategy = conversion.get("strategy", "None")
        if strategy != "None":
            causes.append(
                _cause(
                    "spec.conversion.strategy",
                    f'Unsupported value: {json.dumps(strategy)}: supported values: "None"',
                    "FieldValueNotSupported",
                )
            )
    return causes


def _validate_versions(versions: Any) -> list[status.Cause]:
    if not isinstance(versions, list) or not versions:
        return [_cause("spec.versions", "Invalid value: null: must have exactly one version")]
    causes: list[status.Cause] = []
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage") is True]
    if len(storage) != 1:
        names = [v.get("name") for v in versions if isinstance(v, dict)]
        causes.append(
            _cause(
                "spec.versions",
                f"Invalid value: {names}: must have exactly one version marked as storage version",
            )
        )
    seen: set[str] = set()
    for index, version in enumerate(versions):
        here = f"spec.versions[{index}]"
        if not _check_type(causes, here, version, dict):
            continue
        name = version.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            causes.append(
                _cause(f"{here}.name", f"Invalid value: {json.dumps(name)}: must be a DNS label")
            )
        elif name in seen:
            causes.append(
                _cause(f"{here}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
            )
        else:
            seen.add(name)
        for key in ("served", "storage", "deprecated"):
            _check_type(causes, f"{here}.{key}", version.get(key), bool)
        _check_type(causes, f"{here}.deprecationWarning", version.get("deprecationWarning"), str)
        causes.extend(_subresources(here, version.get("subresources")))
        causes.extend(_columns(here, version.get("additionalPrinterColumns")))
        schema_holder = version.get("schema")
        path = f"{here}.schema.openAPIV3Schema"
        schema = schema_holder.get("openAPIV3Schema") if isinstance(schema_holder, dict) else None
        if not isinstance(schema, dict):
            causes.append(
                _cause(path, "Required value: schemas are required", "FieldValueRequired")
            )
            continue
        if schema.get("type") != "object":
            causes.append(
                _cause(
                    f"{path}.type",
                    "Required value: must be object at the root",
                    "FieldValueRequired",
                )
            )
        causes.extend(_structural(schema, path, root=True))
    return causes


def _subresources(here: str, subresources: Any) -> list[status.Cause]:
    causes: list[status.Cause] = []
    path = f"{here}.subresources"
    if not _check_type(causes, path, subresources, dict):
        return causes
    _check_type(causes, f"{path}.status", subresources.get("status"), dict)
    scale = subresources.get("scale")
    if _check_type(causes, f"{path}.scale", scale, dict):
        for key, prefix in (("specReplicasPath", ".spec."), ("statusReplicasPath", ".status.")):
            value = scale.get(key)
            if not value:
                causes.append(_required(f"{path}.scale.{key}"))
            elif _check_type(causes, f"{path}.scale.{key}", value, str) and not value.startswith(
                prefix
            ):
                causes.append(
                    _cause(
                        f"{path}.scale.{key}",
                        f'Invalid value: "{value}": should be a json path under {prefix[:-1]}',
                    )
                )
        _check_type(causes, f"{path}.scale.labelSelectorPath", scale.get("labelSelectorPath"), str)
    return causes


def _columns(here: str, columns: Any) -> list[status.Cause]:
    causes: list[status.Cause] = []
    path = f"{here}.additionalPrinterColumns"
    if not _check_type(causes, path, columns, list):
        return causes
    for index, column in enumerate(columns):
        at = f"{path}[{index}]"
        if not _check_type(causes, at, column, dict):
            continue
        for key in ("name", "jsonPath"):
            if not column.get(key):
                causes.append(_required(f"{at}.{key}"))
            _check_type(causes, f"{at}.{key}", column.get(key), str)
        if column.get("type") not in _COLUMN_TYPES:
            supported = ", ".join(f'"{t}"' for t in _COLUMN_TYPES)
            causes.append(
                _cause(
                    f"{at}.type",
                    f"Unsupported value: {json.dumps(column.get('type'))}: supported values:"
                    f" {supported}",
                    "FieldValueNotSupported",
                )
            )
        _check_type(causes, f"{at}.priority", column.get("priority"), int)
        _check_type(causes, f"{at}.description", column.get("description"), str)
        _check_type(causes, f"{at}.format", column.get("format"), str)
    return causes


def _structural(schema: Object, path: str, *, root: bool = False) -> list[status.Cause]:
    """The structural-schema rules and the JSON types of the keywords, recursively."""
    causes: list[status.Cause] = []
    for key, kinds in _SCHEMA_KEYS.items():
        _check_type(causes, f"{path}.{key}", schema.get(key), *kinds)
    if causes:
        return causes
    kind = schema.get("type")
    free = schema.get("x-kubernetes-int-or-string") or schema.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if kind is not None and kind not in _TYPES:
        supported = ", ".join(f'"{t}"' for t in _TYPES)
        causes.append(
            _cause(
                f"{path}.type",
                f'Unsupported value: "{kind}": supported values: {supported}',
                "FieldValueNotSupported",
            )
        )
    if not kind and not free and not root:
        causes.append(
            _cause(
                f"{path}.type",
                "Required value: must not be empty for specified object fields",
                "FieldValueRequired",
            )
        )
    if kind == "array" and not isinstance(schema.get("items"), dict):
        causes.append(
            _cause(f"{path}.items", "Required value: must be specified", "FieldValueRequired")
        )
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as err:
            causes.append(_cause(f"{path}.pattern", f"Invalid value: {json.dumps(pattern)}: {err}"))
    _strings(causes, f"{path}.required", schema.get("required"))
    for key, child in (schema.get("properties") or {}).items():
        if _check_type(causes, f"{path}.properties[{key}]", child, dict):
            causes.extend(_structural(child, f"{path}.properties[{key}]"))
    for key in ("items", "additionalProperties"):
        child = schema.get(key)
        if isinstance(child, dict):
            causes.extend(_structural(child, f"{path}.{key}"))
    if "default" in schema and not causes:
        for cause in crdschema.validate_value(schema, schema["default"], "default"):
            causes.append(
                _cause(f"{path}.default", f"Invalid value: {cause.field}: {cause.message}")
            )
    return causes


def names_conflict(crd: Object, others: list[Object]) -> str:
    """Why the names of ``crd`` cannot be accepted (another CRD of its group has them), or ""."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    mine = {names.get("plural"), names.get("singular")} - {None, ""}
    kind = names.get("kind")
    for other in others:
        other_spec = other.get("spec") or {}
        if other_spec.get("group") != spec.get("group"):
            continue
        if (other.get("metadata") or {}).get("name") == (crd.get("metadata") or {}).get("name"):
            continue
        accepted = (other.get("status") or {}).get("acceptedNames") or {}
        if mine & {accepted.get("plural"), accepted.get("singular")}:
            return f'"{names.get("plural")}" is already in use'
        if kind and kind == accepted.get("kind"):
            return f'"{kind}" is already in use'
    return ""
