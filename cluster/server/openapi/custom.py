"""OpenAPI documents of the CRD kind and of custom resources, built from their schemas.

Each served custom version gets a v3 document (``apis/<group>/<version>``) with its paths and
its schema (the CRD's ``openAPIV3Schema`` with ``apiVersion``, ``kind`` and ``metadata`` filled
in, named as kube-apiserver names it: ``com.example.v1.Widget``), and, while custom resources
exist, the v2 document gains the same paths and definitions. The paths are those of the
generated ``apps/v1`` Deployment operations (every verb, ``status`` and ``scale``, with the
``fieldValidation`` parameter kubectl looks for before it leaves validation to the server),
renamed for the custom kind, less what the version does not serve, and without the namespace
for cluster-scoped kinds; strategic merge patches are not offered, as kube-apiserver does not.
The documents are built when a client asks after a change of the registry and kept, compressed,
until the next change.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from typing import Any

from k3py.cluster.api.customresources import (
    CRD,
    CustomResourceInfo,
    CustomResourceRegistry,
)
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.server.openapi.documents import Document, Documents, served_documents

Schema = dict[str, Any]
_TEMPLATE_GV = "apis/apps/v1"
_TEMPLATE_PREFIX = "/apis/apps/v1/"
_TEMPLATE_DEF = "io.k8s.api.apps.v1.Deployment"
_V3_REF = "#/components/schemas/"
_V2_REF = "#/definitions/"
_STRATEGIC = "application/strategic-merge-patch+json"
_CRD_DEF = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
_FREE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_CRD_SCHEMA: Schema = {
    "description": "CustomResourceDefinition represents a resource that should be exposed on"
    " the API server. Its name MUST be in the format <.spec.name>.<.spec.group>.",
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            **_FREE,
            "description": "spec describes how the user wants the resources to appear",
        },
        "status": {**_FREE, "description": "status indicates the actual state of the CRD"},
    },
}


def definition_name(info: ResourceInfo) -> str:
    """``example.com``/``v1``/``Widget`` → ``com.example.v1.Widget`` (kube-apiserver's naming)."""
    if info is CRD:
        return _CRD_DEF
    group = ".".join(reversed(info.group.split(".")))
    return f"{group}.{info.version}.{info.kind}"


def _document(raw: bytes) -> Document:
    return Document(
        hashlib.sha512(raw).hexdigest().upper(), gzip.compress(raw, compresslevel=6, mtime=0)
    )


def _encode(content: Any) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode()


def _kind_schema(info: ResourceInfo, schema: Schema, ref: str) -> Schema:
    out = copy.deepcopy(schema) if schema else {"type": "object"}
    properties = out.setdefault("properties", {})
    properties["apiVersion"] = {
        "description": "APIVersion defines the versioned schema of this representation of an"
        " object.",
        "type": "string",
    }
    properties["kind"] = {
        "description": "Kind is a string value representing the REST resource this object"
        " represents.",
        "type": "string",
    }
    properties["metadata"] = {
        "allOf": [{"$ref": f"{ref}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
        "description": "Standard object's metadata.",
    }
    out["x-kubernetes-group-version-kind"] = [
        {"group": info.group, "kind": info.kind, "version": info.version}
    ]
    return out


def _list_schema(info: ResourceInfo, ref: str) -> Schema:
    return {
        "description": f"{info.kind}List is a list of {info.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "items": {
                "type": "array",
                "items": {"$ref": f"{ref}{definition_name(info)}"},
            },
            "metadata": {
                "allOf": [{"$ref": f"{ref}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}]
            },
        },
        "x-kubernetes-group-version-kind": [
            {"group": info.group, "kind": info.kind + "List", "version": info.version}
        ],
    }


def _rename(node: Any, info: ResourceInfo, template: tuple[str, str]) -> Any:
    """A template operation renamed for ``info``: paths, refs, kinds, group/version/kind."""
    plural, kind = template
    text = json.dumps(node)
    text = text.replace(_TEMPLATE_DEF, definition_name(info))
    text = text.replace(_TEMPLATE_PREFIX, f"/apis/{info.group}/{info.version}/")
    text = text.replace(plural, info.plural).replace(kind, info.kind)
    out = json.loads(text)
    _fix_gvk(out, info)
    return out


def _fix_gvk(node: Any, info: ResourceInfo) -> None:
    if isinstance(node, dict):
        gvk = node.get("x-kubernetes-group-version-kind")
        if isinstance(gvk, dict) and gvk.get("kind") in (info.kind, info.kind + "List"):
            gvk["group"], gvk["version"] = info.group, info.version
        for value in node.values():
            _fix_gvk(value, info)
    elif isinstance(node, list):
        for value in node:
            _fix_gvk(value, info)


def _without_namespace(path_item: Any) -> Any:
    if isinstance(path_item, dict):
        return {k: _without_namespace(v) for k, v in path_item.items()}
    if isinstance(path_item, list):
        return [
            _without_namespace(v)
            for v in path_item
            if not (isinstance(v, dict) and v.get("in") == "path" and v.get("name") == "namespace")
        ]
    return path_item


def _drop_strategic(node: Any) -> None:
    if isinstance(node, dict):
        for key in ("requestBody",):
            content = (node.get(key) or {}).get("content")
            if isinstance(content, dict):
                content.pop(_STRATEGIC, None)
        consumes = node.get("consumes")
        if isinstance(consumes, list) and _STRATEGIC in consumes:
            consumes.remove(_STRATEGIC)
        for value in node.values():
            _drop_strategic(value)
    elif isinstance(node, list):
        for value in node:
            _drop_strategic(value)


def paths_for(info: ResourceInfo, template_paths: dict[str, Any]) -> dict[str, Any]:
    """The paths of one custom version, from the Deployment paths of a template document."""
    ns = "namespaces/{namespace}/"
    paths: dict[str, Any] = {}
    for path, item in template_paths.items():
        if not path.startswith(_TEMPLATE_PREFIX) or "/deployments" not in path:
            continue
        tail = path[len(_TEMPLATE_PREFIX) :]
        sub = tail.rsplit("/", 1)[-1] if tail.endswith(("/status", "/scale")) else ""
        if sub and sub not in info.subresources:
            continue
        if not info.namespaced:
            if not tail.startswith(ns):
                continue  # the all-namespaces list is the collection itself
            tail = tail[len(ns) :]
        scoped = item if info.namespaced else _without_namespace(item)
        renamed = _rename(scoped, info, ("deployments", "Deployment"))
        if isinstance(info, CustomResourceInfo):
            _drop_strategic(renamed)
        new_tail = tail.replace("deployments", info.plural)
        paths[f"/apis/{info.group}/{info.version}/{new_tail}"] = renamed
    return paths


def _closure(refs_from: Any, schemas: dict[str, Any], prefix: str) -> set[str]:
    """Names of the template schemas that ``refs_from`` refers to, transitively."""
    seen: set[str] = set()
    todo = [refs_from]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                name = ref[len(prefix) :]
                if name not in seen and name in schemas:
                    seen.add(name)
                    todo.append(schemas[name])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return seen


def _schema_of(info: ResourceInfo) -> Schema:
    return info.schema if isinstance(info, CustomResourceInfo) else _CRD_SCHEMA


def _v2_schema(schema: Any) -> Any:
    """A v3 schema as a v2 definition: v2 refs, no ``nullable`` (swagger 2 has none)."""
    text = json.dumps(schema).replace(_V3_REF, _V2_REF)
    out = json.loads(text)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("nullable", None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(out)
    return out


def build(registry: CustomResourceRegistry, static: Documents) -> Documents:
    """The served documents: the static ones plus those of the registry's kinds."""
    template = json.loads(static.v3[_TEMPLATE_GV].json())
    template_schemas = template["components"]["schemas"]
    infos: list[ResourceInfo] = [CRD, *registry.custom()]
    by_gv: dict[str, list[ResourceInfo]] = {}
    for info in infos:
        by_gv.setdefault(f"apis/{info.group}/{info.version}", []).append(info)
    v3 = dict(static.v3)
    all_paths: dict[str, Any] = {}
    all_schemas: dict[str, Any] = {}
    for gv, members in by_gv.items():
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        for info in members:
            paths.update(paths_for(info, template["paths"]))
            schemas[definition_name(info)] = _kind_schema(info, _schema_of(info), _V3_REF)
            schemas[definition_name(info) + "List"] = _list_schema(info, _V3_REF)
        for name in _closure([paths, schemas], template_schemas, _V3_REF):
            schemas.setdefault(name, template_schemas[name])
        document = {
            "openapi": template["openapi"],
            "info": template["info"],
            "paths": paths,
            "components": {"schemas": schemas},
        }
        v3[gv] = _document(_encode(document))
        all_paths.update(paths)
        all_schemas.update(schemas)
    if not registry.custom():  # only the CRD kind: the static v2 (and its protobuf) stays
        return Documents(v2=static.v2, v3=v3, v2_protobuf=static.v2_protobuf)
    v2 = json.loads(static.v2.json())
    for name, schema in all_schemas.items():
        v2["definitions"].setdefault(name, _v2_schema(schema))
    v2_template = {p: v2["paths"][p] for p in v2["paths"] if p.startswith(_TEMPLATE_PREFIX)}
    for info in infos:
        v2["paths"].update(
            {p: _v2_schema(item) for p, item in paths_for(info, v2_template).items()}
        )
    # Custom resources are not in the protobuf form: clients that ask for it fall back to v3.
    return Documents(v2=_document(_encode(v2)), v3=v3, v2_protobuf=None)


def documents(registry: CustomResourceRegistry | None) -> Documents:
    """This server's documents, rebuilt after a change of its custom resources."""
    static = served_documents()
    if registry is None:
        return static
    cached = registry.cache.get("openapi")
    if isinstance(cached, tuple) and cached[0] == registry.generation:
        found = cached[1]
        assert isinstance(found, Documents)
        return found
    built = build(registry, static)
    registry.cache["openapi"] = (registry.generation, built)
    return built
