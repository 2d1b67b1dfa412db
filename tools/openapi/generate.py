"""Generate the served OpenAPI files from the official Kubernetes Python client's models.

Run on the build host (``python -m tools.openapi.generate``) whenever the served
kinds (:data:`k3py.cluster.api.resources.RESOURCES`) or the client's version change; ``--check``
only reports whether the committed files are current. It walks the client's model classes from
every served kind, turns each into a Kubernetes-named definition (field types, descriptions,
required fields), restores what the models lose from :mod:`.curation` and the descriptions they
drop from :mod:`.descriptions`, renders the v2 and v3 documents (:mod:`.render`) and the
unknown-field index, and writes them to ``generated/`` (see :mod:`.data`): deterministic bytes,
so an unchanged input gives unchanged files. The boards never run this (they have no
``kubernetes`` package); the server reads only the generated files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from k3py.cluster.api.resources import RESOURCES, group_versions
from k3py.cluster.server.openapi import data, fields
from tools.openapi import curation, protobuf_v2, render
from tools.openapi.descriptions import LightkubeDocs

Schema = dict[str, Any]

_GROUP_PACKAGES = {"": "core"}
_META_PACKAGE = curation.META
_NOQA = re.compile(r"\s*# noqa: E501\s*$")
_REQUIRED = re.compile(r"must not be `None`")


class GeneratorError(Exception):
    """The client's models do not match what the generator expects; the message names it."""


def package_of(group: str, version: str) -> str:
    """The definitions' package: ``coordination.k8s.io`` → ``io.k8s.api.coordination.v1``."""
    short = _GROUP_PACKAGES.get(group, group.split(".")[0])
    return f"io.k8s.api.{short}.{version}"


def _short_name(class_name: str) -> str:
    for prefix in ("CoreV1", "RbacV1", "V1"):
        if class_name.startswith(prefix):
            return class_name[len(prefix) :]
    raise GeneratorError(f"model {class_name} is not a v1 type; extend the generator's naming")


def _description(prop: Any) -> str:
    """The field description from a model property's getter docstring."""
    doc = inspect.getdoc(prop.fget) or ""
    lines = doc.split("\n")[1:]  # the first line is "Gets the x of this Y."
    text: list[str] = []
    for line in lines:
        if line.startswith(":return:"):
            break
        text.append(_NOQA.sub("", line))
    return "\n".join(text).strip()


def _required(prop: Any) -> bool:
    return bool(_REQUIRED.search(inspect.getsource(prop.fset)))


class Generator:
    """Walks model classes and accumulates definitions keyed by Kubernetes' names."""

    def __init__(self, models: Any, docs: LightkubeDocs) -> None:
        self.models = models
        self.docs = docs
        self.package: dict[str, str] = {}  # model class name -> package
        self.definitions: dict[str, Schema] = {}

    # -- naming ---------------------------------------------------------------------------
    def model(self, class_name: str) -> Any:
        model = getattr(self.models, class_name, None)
        if model is None:
            raise GeneratorError(f"the Python client has no model {class_name}")
        return model

    def kind_class(self, group: str, kind: str) -> str:
        candidates = [f"CoreV1{kind}", f"V1{kind}"] if group == "" else [f"V1{kind}"]
        for name in candidates:
            if hasattr(self.models, name):
                return name
        raise GeneratorError(f"no Python model for kind {kind} (tried {', '.join(candidates)})")

    def definition_name(self, class_name: str) -> str:
        return f"{self.package[class_name]}.{_short_name(class_name)}"

    # -- package assignment ---------------------------------------------------------------
    def claim(self, roots: list[str], package: str) -> None:
        """Assign every model reachable from ``roots`` and not yet claimed to ``package``."""
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in self.package:
                continue
            self.package[name] = _META_PACKAGE if name in curation.META_CLASSES else package
            for type_text in self.model(name).openapi_types.values():
                todo.extend(re.findall(r"[A-Z]\w+", type_text))

    # -- schemas --------------------------------------------------------------------------
    def field_schema(self, class_name: str, attribute: str, type_text: str) -> Schema:
        override = curation.TYPED_FIELDS.get((class_name, attribute))
        if override is not None:
            return {"$ref": override}
        if type_text.startswith("list["):
            return {"type": "array", "items": self.item_schema(type_text[5:-1])}
        if type_text.startswith("dict(str, "):
            value = self.item_schema(type_text[10:-1])
            if (class_name, attribute) in curation.QUANTITY_MAPS:
                value = {"$ref": curation.QUANTITY}
            elif (class_name, attribute) in curation.BYTE_MAPS:
                value = {"type": "string", "format": "byte"}
            return {"type": "object", "additionalProperties": value}
        if type_text == "object":
            raise GeneratorError(
                f"{class_name}.{attribute} is an untyped object; add it to curation.TYPED_FIELDS"
            )
        return self.item_schema(type_text)

    def item_schema(self, type_text: str) -> Schema:
        scalars: dict[str, Schema] = {
            "str": {"type": "string"},
            "int": {"type": "integer"},
            "bool": {"type": "boolean"},
            "float": {"type": "number", "format": "double"},
            "datetime": {"$ref": curation.TIME},
            "object": {"type": "object"},
        }
        if type_text in scalars:
            return dict(scalars[type_text])
        if type_text == "list[str]":  # UserInfo.extra: map of string lists
            return {"type": "array", "items": {"type": "string"}}
        if type_text.startswith(("list[", "dict(")):
            raise GeneratorError(f"nested container type {type_text} is not supported")
        return {"$ref": self.definition_name(type_text)}

    def add_model(self, class_name: str) -> None:
        name = self.definition_name(class_name)
        if name in self.definitions:
            return
        model = self.model(class_name)
        short = _short_name(class_name)
        docs = self.docs.lookup(name)
        properties: dict[str, Schema] = {}
        required: list[str] = []
        self.definitions[name] = {}  # reserve: models refer to each other in cycles
        for attribute, type_text in model.openapi_types.items():
            json_name = model.attribute_map[attribute]
            prop = getattr(model, attribute)
            schema = self.field_schema(class_name, attribute, type_text)
            description = _description(prop) or (docs.fields.get(json_name, "") if docs else "")
            if description:
                schema["description"] = description
            self.add_extensions(short, json_name, schema)
            properties[json_name] = schema
            if _required(prop):
                required.append(json_name)
            for ref in re.findall(r"[A-Z]\w+", type_text):
                self.add_model(ref)
        definition: Schema = {"type": "object", "properties": properties}
        if required:
            definition["required"] = required
        if docs and docs.description:
            definition["description"] = docs.description
        if short in curation.ATOMIC_STRUCTS:
            definition["x-kubernetes-map-type"] = "atomic"
        self.definitions[name] = definition

    @staticmethod
    def add_extensions(short: str, field: str, schema: Schema) -> None:
        patch = curation.PATCH_META.get((short, field))
        if patch is not None:
            strategy, merge_key = patch
            schema["x-kubernetes-patch-strategy"] = strategy
            if merge_key:
                schema["x-kubernetes-patch-merge-key"] = merge_key
                keys = curation.LIST_MAP_KEYS.get((short, field), (merge_key,))
                schema["x-kubernetes-list-type"] = "map"
                schema["x-kubernetes-list-map-keys"] = list(keys)
        if (short, field) in curation.LIST_SETS:
            schema["x-kubernetes-list-type"] = "set"
        if (short, field) in curation.ATOMIC_MAPS:
            schema["x-kubernetes-map-type"] = "atomic"


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def build(models: Any, docs: LightkubeDocs) -> dict[str, Any]:
    """The data file's content: every definition the served kinds need, Kubernetes-named."""
    gen = Generator(models, docs)
    handwritten = {(g, v, k) for g, v, k, _ in curation.HANDWRITTEN_KINDS}
    served = [(r.group, r.version, r.kind, "list" in r.verbs) for r in RESOURCES
              if (r.group, r.version, r.kind) not in handwritten]  # fmt: skip
    served += [(g, v, k, False) for g, v, k in curation.SUBRESOURCE_KINDS]
    kind_classes = {(g, v, k): gen.kind_class(g, k) for g, v, k, _ in served}
    list_classes = {(g, v, k): kind_classes[(g, v, k)] + "List" for g, v, k, has in served if has}

    core = [kind_classes[(g, v, k)] for g, v, k, _ in served if g == ""]
    gen.claim(core + list(curation.EXTRA_CORE_ROOTS), package_of("", "v1"))
    for (group, version, _kind), class_name in kind_classes.items():
        gen.claim([class_name], package_of(group, version))
    for (group, version, _kind), class_name in list_classes.items():
        gen.claim([class_name], package_of(group, version))
    gen.claim(list(curation.META_ROOTS), _META_PACKAGE)

    for class_name in [*kind_classes.values(), *list_classes.values(), *curation.META_ROOTS]:
        gen.add_model(class_name)
    definitions = gen.definitions

    for (group, version, kind), class_name in kind_classes.items():
        definitions[gen.definition_name(class_name)]["x-kubernetes-group-version-kind"] = [
            _gvk(group, version, kind)
        ]
    for (group, version, kind), class_name in list_classes.items():
        list_definition = definitions[gen.definition_name(class_name)]
        list_definition["x-kubernetes-group-version-kind"] = [_gvk(group, version, kind + "List")]
        list_definition.setdefault("description", f"{kind}List is a list of {kind} objects.")
    everywhere = [_gvk(gv.group, gv.version, "") for gv in group_versions()]
    for kind in ("DeleteOptions", "WatchEvent"):
        definitions[f"{_META_PACKAGE}.{kind}"]["x-kubernetes-group-version-kind"] = [
            {**gvk, "kind": kind} for gvk in everywhere
        ]
    for kind in ("Status", "APIResourceList", "APIGroupList", "APIGroup", "APIVersions"):
        name = f"{_META_PACKAGE}.{kind}"
        if name in definitions:
            definitions[name]["x-kubernetes-group-version-kind"] = [_gvk("", "v1", kind)]
    for name, definition in curation.HANDWRITTEN.items():
        definitions[name] = json.loads(json.dumps(definition))
    # Kinds Kubernetes has no model for (k3py's own) bring their definitions along.
    for *_, make in curation.HANDWRITTEN_KINDS:
        definitions.update(json.loads(json.dumps(make())))

    _check_references(definitions)
    import kubernetes  # the generator runs only where the client is installed

    return {
        "format": data.FORMAT,
        "source": f"kubernetes Python client {kubernetes.__version__}",
        # The client's major version follows the Kubernetes minor release it was built from.
        "kubernetes_version": f"v1.{kubernetes.__version__.split('.')[0]}",
        "kinds": sorted(
            [f"{g}/{v}/{k}".lstrip("/") for g, v, k, _ in served]
            + [f"{g}/{v}/{k}" for g, v, k in handwritten]
        ),
        "definitions": definitions,
    }


def _check_references(definitions: dict[str, Schema]) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None and ref not in definitions:
                raise GeneratorError(f"{where} refers to {ref}, which was not generated")
            for value in node.values():
                walk(value, where)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    for name, definition in definitions.items():
        walk(definition, name)


def _gzip_json(content: Any) -> tuple[bytes, bytes]:
    """Deterministic bytes: sorted keys, no whitespace, gzip without a timestamp."""
    raw = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return raw, gzip.compress(raw, compresslevel=9, mtime=0)


def files(content: dict[str, Any]) -> dict[str, bytes]:
    """Every generated file by name: the documents, the field index and the manifest."""
    rendered = render.build(content)
    out: dict[str, bytes] = {}

    def add(name: str, document: dict[str, Any]) -> dict[str, str]:
        raw, out[name] = _gzip_json(document)
        return {"file": name, "hash": hashlib.sha512(raw).hexdigest().upper()}

    v2 = add("openapi_v2.json.gz", rendered.v2)
    # The same v2 document as gnostic's protobuf message, which kubectl asks for.
    v2_protobuf = protobuf_v2.encode_document(rendered.v2)
    out[data.V2_PROTOBUF] = gzip.compress(v2_protobuf, compresslevel=9, mtime=0)
    v2_protobuf_entry = {
        "file": data.V2_PROTOBUF,
        "hash": hashlib.sha512(v2_protobuf).hexdigest().upper(),
    }
    v3 = {path: add(data.file_name(path), doc) for path, doc in rendered.v3.items()}
    index = fields.build_index(content["definitions"])
    out[data.FIELDS] = _gzip_json(fields.encode_index(index))[1]
    manifest = {
        "format": content["format"],
        "source": content["source"],
        "kubernetes_version": content["kubernetes_version"],
        "kinds": content["kinds"],
        "v2": v2,
        "v2_protobuf": v2_protobuf_entry,
        "v3": v3,
    }
    out[data.MANIFEST] = (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.openapi.generate")
    parser.add_argument("--check", action="store_true", help="only compare with the files")
    parser.add_argument("--output-dir", type=Path, default=data.GENERATED)
    args = parser.parse_args(argv)
    from kubernetes.client import models  # a dev dependency, absent on the boards

    wanted = files(build(models, LightkubeDocs()))
    directory: Path = args.output_dir
    present = {p.name for p in directory.glob("*")} if directory.is_dir() else set()
    if args.check:
        stale = sorted(
            name
            for name in wanted.keys() | present
            if name not in wanted
            or name not in present
            or (directory / name).read_bytes() != wanted[name]
        )
        if stale:
            print(
                f"{directory}: out of date ({', '.join(stale)}): run {parser.prog}",
                file=sys.stderr,
            )
            return 1
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for name in present - wanted.keys():
        (directory / name).unlink()
    for name, content in sorted(wanted.items()):
        (directory / name).write_bytes(content)
    total = sum(len(content) for content in wanted.values())
    print(f"wrote {len(wanted)} files to {directory} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
