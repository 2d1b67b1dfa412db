"""Rendering of the OpenAPI documents: the v2 document and one v3 document per group/version.

Combines the generated definitions with the operations of :mod:`.paths` into the documents the
server publishes. v2 references are ``#/definitions/…``; v3 references are
``#/components/schemas/…``, wrapped in ``allOf`` where a description sits beside them (as
Kubernetes publishes them), and each v3 document carries only the definitions its operations
reach. Runs in the generator, on the build host: rendering at run time would cost the server
megabytes of memory that Python does not give back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k3py.cluster.api.resources import group_versions
from tools.openapi.paths import (
    PARAMETERS,
    PATCH_TYPES,
    STATUS,
    WATCH_EVENT,
    Operation,
    group_version_operations,
    prefix,
)

Schema = dict[str, Any]

V2_REF = "#/definitions/"
V3_REF = "#/components/schemas/"
JSON = "application/json"
# Definitions in every v3 document whether or not an operation refers to them: what clients
# decode from any group (Table for `kubectl get`, the scalar-like apimachinery types).
ALWAYS_INCLUDED = (
    "io.k8s.apimachinery.pkg.apis.meta.v1.Table",
    "io.k8s.apimachinery.pkg.apis.meta.v1.PartialObjectMetadata",
    "io.k8s.apimachinery.pkg.apis.meta.v1.PartialObjectMetadataList",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
)
_SECURITY_SCHEME = {
    "BearerToken": {
        "description": "Bearer Token authentication",
        "in": "header",
        "name": "authorization",
        "type": "apiKey",
    }
}


@dataclass(frozen=True)
class Rendered:
    v2: dict[str, Any]
    v3: dict[str, dict[str, Any]]  # "api/v1", "apis/apps/v1", ... -> document


def kind_definitions(definitions: dict[str, Schema]) -> dict[tuple[str, str, str], str]:
    """(group, version, kind) → definition name, from ``x-kubernetes-group-version-kind``."""
    out: dict[tuple[str, str, str], str] = {}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", ()):
            out.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return out


def _refs(node: Any, prefix_: str) -> Any:
    """Rewrite the data file's bare ``$ref`` names into document references."""
    if isinstance(node, dict):
        out = {key: _refs(value, prefix_) for key, value in node.items()}
        if "$ref" in out:
            out["$ref"] = prefix_ + out["$ref"]
        return out
    if isinstance(node, list):
        return [_refs(value, prefix_) for value in node]
    return node


def _v3_schema(node: Any) -> Any:
    """v3 form: a reference with sibling keys (a description) becomes ``allOf`` of it, as
    Kubernetes publishes it, because OpenAPI 3.0 ignores the siblings of ``$ref``."""
    if isinstance(node, dict):
        out = {key: _v3_schema(value) for key, value in node.items()}
        if "$ref" in out and len(out) > 1:
            out["allOf"] = [{"$ref": V3_REF + out.pop("$ref")}]
        elif "$ref" in out:
            out["$ref"] = V3_REF + out["$ref"]
        return out
    if isinstance(node, list):
        return [_v3_schema(value) for value in node]
    return node


def _closure(names: set[str], definitions: dict[str, Schema]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_referenced(definitions[name]))
    return seen


def _referenced(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        for value in node.values():
            found.extend(_referenced(value))
        return found
    if isinstance(node, list):
        return [ref for value in node for ref in _referenced(value)]
    return []


def _gvk(op: Operation) -> dict[str, str]:
    group, version, kind = op.gvk
    return {"group": group, "kind": kind, "version": version}


def _path_parameter(name: str, kind: str) -> Schema:
    what = "object name and auth scope, such as for teams and projects"
    text = f"name of the {kind}" if name == "name" else what
    return {"name": name, "in": "path", "required": True, "description": text}


def _v2_operation(op: Operation) -> Schema:
    params: list[Schema] = []
    if op.body:
        body = {"$ref": V2_REF + op.body}
        params.append(
            {"name": "body", "in": "body", "required": op.method != "delete", "schema": body}
        )
    for name in op.query:
        kind, text = PARAMETERS[name]
        params.append(
            {"name": name, "in": "query", "type": kind, "uniqueItems": True, "description": text}
        )
    responses: Schema = {
        str(code): {
            "description": "OK" if code == 200 else "Created" if code == 201 else "Accepted",
            "schema": {"$ref": V2_REF + definition},
        }
        for code, definition in op.responses
    }
    responses["401"] = {"description": "Unauthorized"}
    produces = [JSON, "application/yaml"]
    if op.action == "list":
        produces += ["application/json;stream=watch"]
    return {
        "description": op.description,
        "operationId": op.operation_id,
        "consumes": list(PATCH_TYPES) if op.method == "patch" else ["*/*"],
        "produces": produces,
        "schemes": ["https"],
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": _gvk(op),
    }


def _v3_operation(op: Operation) -> Schema:
    out: Schema = {
        "description": op.description,
        "operationId": op.operation_id,
        "tags": [op.tag],
        "parameters": [
            {
                "name": name,
                "in": "query",
                "description": PARAMETERS[name][1],
                "schema": {"type": PARAMETERS[name][0], "uniqueItems": True},
            }
            for name in op.query
        ],
        "responses": {"401": {"description": "Unauthorized"}},
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": _gvk(op),
    }
    if op.body:
        schema = {"$ref": V3_REF + op.body}
        types = PATCH_TYPES if op.method == "patch" else (JSON, "application/yaml")
        out["requestBody"] = {
            "content": {media: {"schema": schema} for media in types},
            "required": op.method != "delete",
        }
    for code, definition in op.responses:
        schema = {"$ref": V3_REF + definition}
        content = {JSON: {"schema": schema}, "application/yaml": {"schema": schema}}
        if op.action == "list":
            content["application/json;stream=watch"] = {"schema": schema}
        text = "OK" if code == 200 else "Created" if code == 201 else "Accepted"
        out["responses"][str(code)] = {"description": text, "content": content}
    return out


def _add(paths: dict[str, Schema], op: Operation, operation: Schema, v3: bool) -> None:
    entry = paths.setdefault(op.path, {})
    if "parameters" not in entry:
        params = [_path_parameter(name, op.gvk[2]) for name in op.path_params]
        for param in params:
            if v3:
                param["schema"] = {"type": "string", "uniqueItems": True}
            else:
                param.update(type="string", uniqueItems=True)
        entry["parameters"] = params
    entry[op.method] = operation


def _info(content: dict[str, Any]) -> dict[str, str]:
    return {"title": "Kubernetes", "version": content["kubernetes_version"]}


def build(content: dict[str, Any]) -> Rendered:
    """Every served document, from the generated definitions."""
    definitions: dict[str, Schema] = content["definitions"]
    kinds = kind_definitions(definitions)
    v2_paths: dict[str, Schema] = {}
    v3: dict[str, dict[str, Any]] = {}
    for gv in group_versions():
        ops = group_version_operations(gv.group, gv.version, kinds)
        v3_paths: dict[str, Schema] = {}
        used: set[str] = set(ALWAYS_INCLUDED)
        for op in ops:
            _add(v2_paths, op, _v2_operation(op), v3=False)
            _add(v3_paths, op, _v3_operation(op), v3=True)
            used.update(definition for _, definition in op.responses)
            if op.body:
                used.add(op.body)
        # A watch delivers WatchEvents; every error is a Status.
        used.update((WATCH_EVENT, STATUS))
        schemas = {
            name: _v3_schema(definitions[name]) for name in sorted(_closure(used, definitions))
        }
        v3[prefix(gv.group, gv.version)] = {
            "openapi": "3.0.0",
            "info": _info(content),
            "paths": v3_paths,
            "components": {"schemas": schemas, "securitySchemes": _SECURITY_SCHEME},
        }
    v2 = {
        "swagger": "2.0",
        "info": _info(content),
        "paths": v2_paths,
        "definitions": {
            name: _refs(definition, V2_REF) for name, definition in definitions.items()
        },
        "securityDefinitions": _SECURITY_SCHEME,
        "security": [{"BearerToken": []}],
    }
    return Rendered(v2=v2, v3=v3)
