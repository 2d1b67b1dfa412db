"""Descriptions the official Python client drops, read from ``lightkube-models``' docstrings.

The official client's models keep a field's description only when the field is a scalar, a
list or a map: fields that refer to another type (``spec``, ``metadata``, ``template``…) and
whole types have none. ``lightkube-models`` (a dev dependency, generated from the same
Kubernetes release's spec) writes every description into its dataclasses' docstrings. This
module parses those docstrings as text, without importing the package (its models need the
``lightkube`` client), for the generator only.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

_FIELD = re.compile(r"^\* \*\*(?P<name>[^*]+)\*\* ``[^`]*`` - (?P<text>.*)$")
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_API = "io.k8s.api."


@dataclass(frozen=True)
class TypeDocs:
    """One type's description and its fields' descriptions."""

    description: str
    fields: dict[str, str] = field(default_factory=dict)


def _join(lines: list[str]) -> str:
    return " ".join(line.strip() for line in lines if line.strip())


def parse_docstring(doc: str) -> TypeDocs:
    """Split a lightkube model docstring into the type's and each field's description."""
    head, _, params = doc.partition("**parameters**")
    fields: dict[str, str] = {}
    current: str | None = None
    text: list[str] = []
    for line in params.splitlines():
        match = _FIELD.match(line.strip())
        if match:
            if current is not None:
                fields[current] = _join(text)
            current, text = match["name"], [match["text"]]
        elif current is not None:
            text.append(line)
    if current is not None:
        fields[current] = _join(text)
    return TypeDocs(_join(head.splitlines()), fields)


class LightkubeDocs:
    """Docstrings of lightkube-models' modules, looked up by Kubernetes definition name."""

    def __init__(self, directory: Path | None = None) -> None:
        if directory is None:
            spec = importlib.util.find_spec("lightkube.models")
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("lightkube-models is not installed (a dev dependency)")
            directory = Path(next(iter(spec.submodule_search_locations)))
        self.directory = directory
        self.modules: dict[str, dict[str, TypeDocs]] = {}

    def module_of(self, definition: str) -> tuple[str, str] | None:
        """``io.k8s.api.apps.v1.Deployment`` → (``apps_v1``, ``Deployment``)."""
        if definition.startswith(_META):
            return "meta_v1", definition[len(_META) :]
        if definition.startswith(_API):
            package, version, name = definition[len(_API) :].split(".")
            return f"{package}_{version}", name
        return None

    def _module(self, module: str) -> dict[str, TypeDocs]:
        if module not in self.modules:
            path = self.directory / f"{module}.py"
            types: dict[str, TypeDocs] = {}
            if path.exists():
                for node in ast.parse(path.read_text()).body:
                    doc = ast.get_docstring(node) if isinstance(node, ast.ClassDef) else None
                    if isinstance(node, ast.ClassDef) and doc:
                        types[node.name] = parse_docstring(doc)
            self.modules[module] = types
        return self.modules[module]

    def lookup(self, definition: str) -> TypeDocs | None:
        where = self.module_of(definition)
        if where is None:
            return None
        return self._module(where[0]).get(where[1])
