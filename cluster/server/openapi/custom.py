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
from k3py.cluster.server.connections import release_memory
from k3py.cluster.server.openapi.documents import Document, Documents, served_documents

Schema = dict[str, Any]
_TEMPLATE_GV = "apis/apps/v1"
_TEMPLATE_PREFIX = "/apis/apps/v1/"
_TEMPLATE_DEF = "io.k8s.api.apps.v1.Deployment"
_V3_REF = "#/components/schemas/"
_V2_REF = "#/definitions/"
_STRATEGIC = "application/strategic-merge-patch+json"
_GVK_KEY = '"x-kubernetes-group-version-kind":'
_TEMPLATE_GVK = _GVK_KEY + '{"group":"apps","kind":"Deployment","version":"v1"}'
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


Variants = dict[tuple[bool, bool], dict[str, str]]


def variants(template_paths: dict[str, Any]) -> Variants:
    """The template's path items as JSON text by path tail (``namespaces/{namespace}/
    deployments/{name}``), for each (namespaced, custom object) combination."""
    ns = "namespaces/{namespace}/"
    out: Variants = {}
    for namespaced in (True, False):
        for custom_kind in (True, False):
            texts: dict[str, str] = {}
            for path, item in template_paths.items():
                tail = path[len(_TEMPLATE_PREFIX) :]
                scoped = item
                if not namespaced:
                    if not tail.startswith(ns):
                        continue  # the all-namespaces list is the collection itself
                    tail = tail[len(ns) :]
                    scoped = _without_namespace(item)
                if custom_kind:
                    scoped = copy.deepcopy(scoped)
                    _drop_strategic(scoped)
                texts[tail] = json.dumps(scoped, separators=(",", ":"))
            out[(namespaced, custom_kind)] = texts
    return out


def paths_for(info: ResourceInfo, templates: Variants) -> dict[str, str]:
    """The path items of one served version (JSON text by path), renamed from the template's
    Deployment operations: paths, refs, kinds and the group/version/kind extension."""
    texts = templates[(info.namespaced, isinstance(info, CustomResourceInfo))]
    prefix = f"/apis/{info.group}/{info.version}/"
    gvk = json.dumps(
        {"group": info.group, "kind": info.kind, "version": info.version}, separators=(",", ":")
    )
    paths: dict[str, str] = {}
    for tail, text in texts.items():
        sub = tail.rsplit("/", 1)[-1] if tail.endswith(("/status", "/scale")) else ""
        if sub and sub not in info.subresources:
            continue
        renamed = (
            text.replace(_TEMPLATE_GVK, _GVK_KEY + gvk)
            .replace(_TEMPLATE_DEF, definition_name(info))
            .replace(_TEMPLATE_PREFIX, prefix)
            .replace("deployments", info.plural)
            .replace("Deployment", info.kind)
        )
        paths[prefix + tail.replace("deployments", info.plural)] = renamed
    return paths


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


class _Template:
    """The parts of a generated document that custom documents reuse, each parsed alone out of
    its JSON text (parsing a whole document would leave megabytes of freed objects behind)."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.decoder = json.JSONDecoder()

    def value(self, key: str) -> Any:
        marker = json.dumps(key) + ":"
        at = self.raw.find(marker)
        return None if at < 0 else self.decoder.raw_decode(self.raw, at + len(marker))[0]

    def paths(self) -> dict[str, Any]:
        ns = _TEMPLATE_PREFIX + "namespaces/{namespace}/deployments"
        keys = [_TEMPLATE_PREFIX + "deployments", ns, ns + "/{name}"]
        keys += [ns + "/{name}/status", ns + "/{name}/scale"]
        found = {key: self.value(key) for key in keys}
        return {key: item for key, item in found.items() if item is not None}

    def closure(self, refs_from: Any, have: dict[str, Any]) -> dict[str, Any]:
        """The schemas that ``refs_from`` refers to, transitively, less those in ``have``."""
        found: dict[str, Any] = {}
        todo = [refs_from]
        while todo:
            node = todo.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith(_V3_REF):
                    name = ref[len(_V3_REF) :]
                    if name not in found and name not in have:
                        schema = self.value(name)
                        if schema is not None:
                            found[name] = schema
                            todo.append(schema)
                todo.extend(node.values())
            elif isinstance(node, list):
                todo.extend(node)
        return found


def build(registry: CustomResourceRegistry, static: Documents) -> Documents:
    """The served documents: the static ones plus those of the registry's kinds."""
    template = _Template(static.v3[_TEMPLATE_GV].json().decode())
    template_paths = template.paths()
    templates = variants(template_paths)
    shared = template.closure(template_paths, {_TEMPLATE_DEF: None, _TEMPLATE_DEF + "List": None})
    head = f'"info":{_dumps(template.value("info"))},"openapi":{_dumps(template.value("openapi"))}'
    infos: list[ResourceInfo] = [CRD, *registry.custom()]
    by_gv: dict[str, list[ResourceInfo]] = {}
    for info in infos:
        by_gv.setdefault(f"apis/{info.group}/{info.version}", []).append(info)
    v3 = dict(static.v3)
    all_schemas: dict[str, Any] = {}
    for gv, members in by_gv.items():
        paths: dict[str, str] = {}
        schemas: dict[str, Any] = {}
        for info in members:
            paths.update(paths_for(info, templates))
            schemas[definition_name(info)] = _kind_schema(info, _schema_of(info), _V3_REF)
            schemas[definition_name(info) + "List"] = _list_schema(info, _V3_REF)
        all_schemas.update(schemas)
        text = (
            '{"components":{"schemas":{' + _members({**shared, **schemas})[:-1] + "}},"
            + head + ',"paths":{' + ",".join(f"{_dumps(p)}:{t}" for p, t in paths.items()) + "}}"
        )  # fmt: skip
        v3[gv] = _document(text.encode())
    if not registry.custom():  # only the CRD kind: the static v2 (and its protobuf) stays
        return Documents(v2=static.v2, v3=v3, v2_protobuf=static.v2_protobuf)
    # Custom resources are not in the protobuf form: clients that ask for it fall back to v3.
    return Documents(v2=_document(_v2_with(static.v2, infos, all_schemas)), v3=v3)


def _v2_with(static: Document, infos: list[ResourceInfo], schemas: dict[str, Any]) -> bytes:
    """The v2 document with the paths and definitions of ``infos`` spliced into its text."""
    raw = static.json().decode()
    templates = variants(_Template(raw).paths())
    paths: dict[str, str] = {}
    for info in infos:
        paths.update(paths_for(info, templates))
    definitions = {name: _v2_schema(schema) for name, schema in schemas.items()}
    head, paths_key = '{"definitions":{', '"paths":{'
    at = raw.rfind(paths_key)  # the top-level key: only security ones follow it
    if not raw.startswith(head) or at < 0:
        document = json.loads(raw)
        document["definitions"].update(definitions)
        document["paths"].update({p: json.loads(t) for p, t in paths.items()})
        return _encode(document)
    at += len(paths_key)
    path_members = "".join(f"{_dumps(p)}:{t}," for p, t in paths.items())
    return (head + _members(definitions) + raw[len(head) : at] + path_members + raw[at:]).encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _members(entries: dict[str, Any]) -> str:
    """``"key":value,`` for each entry: members to put first in a non-empty JSON object."""
    return "".join(
        f"{json.dumps(key)}:{json.dumps(value, separators=(',', ':'))},"
        for key, value in entries.items()
    )


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
    release_memory()  # the documents' text was large and short-lived
    return built
