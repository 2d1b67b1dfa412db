"""Structural schemas without a server: pruning, defaulting and kube-apiserver's error texts,
the CRD's own validation, and the printer columns' JSONPath."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from k3py.cluster.api import crdschema
from k3py.cluster.api.crdvalidation import validate_crd
from k3py.cluster.api.customresources import (
    CustomResourceRegistry,
    infos_of,
    version_priority,
)
from k3py.cluster.api.printers_custom import json_path
from k3py.cluster.api.tables import to_table

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 5},
                "port": {"x-kubernetes-int-or-string": True, "default": 80},
                "items": {
                    "type": "array",
                    "maxItems": 2,
                    "items": {
                        "type": "object",
                        "properties": {"id": {"type": "integer", "default": 0}},
                    },
                },
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "note": {"type": "string", "nullable": True},
            },
        }
    },
}


def _messages(obj: dict[str, Any]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in crdschema.validate(SCHEMA, obj)]


def test_pruning_keeps_meta_and_preserved_fields() -> None:
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "a"},
        "spec": {"name": "a", "gone": 1, "items": [{"id": 1, "bad": 2}], "free": {"k": {"v": 1}}},
        "top": True,
    }
    assert crdschema.prune(SCHEMA, obj) == [".spec.gone", ".spec.items[0].bad", ".top"]
    assert obj["spec"] == {"name": "a", "items": [{"id": 1}], "free": {"k": {"v": 1}}}
    assert obj["metadata"] == {"name": "a"}


def test_defaults_fill_missing_fields_inside_out() -> None:
    obj: dict[str, Any] = {"spec": {"name": "a", "items": [{}], "note": None}}
    crdschema.apply_defaults(SCHEMA, obj)
    assert obj["spec"] == {"name": "a", "port": 80, "items": [{"id": 0}], "note": None}


def test_validation_errors_read_as_kube_apiserver_writes_them() -> None:
    assert _messages({"spec": {"name": "a", "port": "http", "note": None}}) == []
    assert _messages({"spec": {"name": "toolong", "port": True, "items": [{}, {}, {}]}}) == [
        "spec.name: Too long: may not be more than 5 bytes",
        'spec.port: Invalid value: "boolean": spec.port in body must be of type integer or'
        ' string: "boolean"',
        "spec.items: Too many: 3: must have at most 2 items",
    ]
    assert _messages({"spec": {"items": [{"id": "x"}]}}) == [
        "spec.name: Required value",
        'spec.items[0].id: Invalid value: "string": spec.items[0].id in body must be of type'
        ' integer: "string"',
    ]
    assert _messages({"spec": {"name": "a", "items": [{"id": 10**30}]}}) == [
        'spec.items[0].id: Invalid value: "number": spec.items[0].id in body must be of type'
        ' integer: "number"'
    ]
    assert _messages({}) == []
    assert _messages({"spec": None}) == [
        'spec: Invalid value: "null": spec in body must be of type object: "null"'
    ]


def _crd(**spec: Any) -> dict[str, Any]:
    version = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": copy.deepcopy(SCHEMA)},
    }
    base = {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"plural": "things", "kind": "Thing"},
        "versions": [version],
    }
    return {"metadata": {"name": "things.example.com"}, "spec": {**base, **spec}}


def test_crd_validation() -> None:
    assert validate_crd(_crd()) == []
    causes = validate_crd(_crd(group="example", scope="Global"))
    fields = [c.field for c in causes]
    assert fields == ["spec.group", "metadata.name", "spec.scope"]
    untyped = {"type": "object", "properties": {"spec": {"properties": {}}}}
    version = {
        "name": "v1",
        "served": True,
        "storage": False,
        "schema": {"openAPIV3Schema": untyped},
    }
    messages = [f"{c.field}: {c.message}" for c in validate_crd(_crd(versions=[version]))]
    assert messages == [
        "spec.versions: Invalid value: ['v1']: must have exactly one version marked as storage"
        " version",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not"
        " be empty for specified object fields",
    ]


def test_registry_orders_versions_and_prints_columns() -> None:
    assert sorted(["v1alpha1", "v2", "v1", "v1beta2", "foo"], key=version_priority) == [
        "v2", "v1", "v1beta2", "v1alpha1", "foo",
    ]  # fmt: skip
    crd = _crd()
    ready = '.status.conditions[?(@.type=="Ready")].status'
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "Port", "type": "string", "jsonPath": ".spec.port"},
        {"name": "Ready", "type": "string", "jsonPath": ready},
    ]
    registry = CustomResourceRegistry()
    assert registry.put("things.example.com", infos_of(crd))
    assert not registry.put("things.example.com", infos_of(crd))
    info = registry.by_plural("example.com", "v1", "things")
    assert info is not None
    assert registry.by_kind("example.com/v1", "Thing") is info
    obj = {
        "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"port": 8080},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    table = to_table(info, [obj], now=datetime(2026, 1, 1, tzinfo=UTC))
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Port", "Ready"]
    assert table["rows"][0]["cells"] == ["a", "8080", "True"]
    assert json_path(obj, ".status.conditions[0].type") == ["Ready"]
    assert registry.remove("things.example.com")
    assert registry.by_plural("example.com", "v1", "things") is None


def test_malformed_crds_are_invalid_not_errors() -> None:
    schema = copy.deepcopy(SCHEMA["properties"]["spec"])
    shapes: list[tuple[str, Any]] = [
        ("versions", {"v1": {}}),
        ("versions", [None, "v1"]),
        ("names", []),
        ("conversion", "None"),
    ]
    for key, value in shapes:
        assert validate_crd(_crd(**{key: value}))
    for key, value in (
        ("properties", ["name"]),
        ("required", "name"),
        ("type", "text"),
        ("pattern", "(["),
        ("enum", "abc"),
        ("items", []),
    ):
        broken = _crd()
        spec = broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        spec[key] = value
        causes = validate_crd(broken)
        assert causes
        assert causes[0].field.startswith("spec.versions[0].schema.openAPIV3Schema.properties")
    defaulted = _crd()
    version = defaulted["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"] = {
        "type": "object",
        "properties": {
            "spec": {**schema, "properties": {"n": {"type": "integer", "default": "x"}}}
        },
    }
    (cause,) = validate_crd(defaulted)
    assert cause.field.endswith("properties[spec].properties[n].default")
