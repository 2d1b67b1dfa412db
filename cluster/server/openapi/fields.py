"""Unknown-field detection for ``fieldValidation=Strict|Warn``.

Walks a decoded object against the schema of its kind and names every field the schema does
not declare, as a JSON path (``.spec.replicaz``, ``.spec.template.spec.containers[0].imagez``,
``.data[key].x`` inside maps of objects). Values of free-form types (RawExtension, FieldsV1)
and of scalar-like types (Quantity, IntOrString, Time) are not descended into; wrong value types
are validation's business, duplicate fields the request decoder's. The schema is reduced on
generation to a small index (field name → what its value is, ``generated/fields.json.gz``),
which the server loads on first use: a check costs one dictionary lookup per field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from k3py.cluster.server.openapi import data

# A field's value, encoded compactly: "" = not checked further, "<definition>" = an object of
# that definition, "[]<definition>" = a list of them, "{}<definition>" = a map to them.
Child = str


@dataclass(frozen=True)
class FieldIndex:
    kinds: dict[tuple[str, str], str]  # (apiVersion, kind) -> definition
    fields: dict[str, dict[str, Child]]  # definition -> field -> child


def _child(schema: dict[str, Any], objects: set[str]) -> Child:
    ref = schema.get("$ref")
    if ref is not None:
        return ref if ref in objects else ""
    if schema.get("type") == "array":
        inner = _child(schema.get("items", {}), objects)
        return "[]" + inner if inner and not inner.startswith(("[]", "{}")) else ""
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        inner = _child(additional, objects)
        return "{}" + inner if inner and not inner.startswith(("[]", "{}")) else ""
    return ""


def build_index(definitions: dict[str, dict[str, Any]]) -> FieldIndex:
    """The field index of every definition with declared properties."""
    objects = {name for name, d in definitions.items() if d.get("properties")}
    fields = {
        name: {field: _child(schema, objects) for field, schema in d["properties"].items()}
        for name, d in definitions.items()
        if name in objects
    }
    kinds: dict[tuple[str, str], str] = {}
    for name, d in definitions.items():
        for gvk in d.get("x-kubernetes-group-version-kind", ()):
            group, version = gvk["group"], gvk["version"]
            api_version = f"{group}/{version}" if group else version
            kinds.setdefault((api_version, gvk["kind"]), name)
    return FieldIndex(kinds=kinds, fields=fields)


def encode_index(index: FieldIndex) -> dict[str, Any]:
    """The index as JSON, for ``generated/fields.json.gz``."""
    kinds = [[api_version, kind, name] for (api_version, kind), name in index.kinds.items()]
    return {"kinds": sorted(kinds), "fields": index.fields}


def decode_index(content: dict[str, Any]) -> FieldIndex:
    kinds = {(api_version, kind): name for api_version, kind, name in content["kinds"]}
    return FieldIndex(kinds=kinds, fields=content["fields"])


@functools.cache
def field_index() -> FieldIndex:
    """The index of this process, read from the generated file on first call."""
    return decode_index(data.read_json(data.FIELDS))


def unknown_fields(api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
    """Paths of the fields in ``obj`` that its kind's schema does not declare.

    A kind the schemas do not describe yields no paths: the REST layer rejects unknown kinds
    before asking.
    """
    return unknown_in(field_index(), api_version, kind, obj)


def unknown_in(index: FieldIndex, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
    """:func:`unknown_fields` against a given index."""
    definition = index.kinds.get((api_version, kind))
    if definition is None:
        return []
    found: list[str] = []
    _walk(index.fields, definition, obj, "", found)
    return found


def _walk(
    fields: dict[str, dict[str, Child]], definition: str, value: Any, path: str, found: list[str]
) -> None:
    if not isinstance(value, dict):
        return
    known = fields[definition]
    for key, child_value in value.items():
        here = f"{path}.{key}"
        child = known.get(key)
        if child is None:
            found.append(here)
        elif child.startswith("[]"):
            if isinstance(child_value, list):
                for i, item in enumerate(child_value):
                    _walk(fields, child[2:], item, f"{here}[{i}]", found)
        elif child.startswith("{}"):
            if isinstance(child_value, dict):
                for name, item in child_value.items():
                    _walk(fields, child[2:], item, f"{here}[{name}]", found)
        elif child:
            _walk(fields, child, child_value, here, found)
