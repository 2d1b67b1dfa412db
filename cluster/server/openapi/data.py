"""The committed, generated OpenAPI files: where they live and how the server reads them.

``generated/`` holds what ``tools/openapi/generate.py`` renders on the build host: each served
document as gzip-compressed JSON (``openapi_v2.json.gz``, and the v2 one as protobuf in
``openapi_v2.pb.gz``, ``api__v1_openapi.json.gz``,
``apis__apps__v1_openapi.json.gz``…), the unknown-field index (``fields.json.gz``) and
``manifest.json`` naming them with each document's hash (uppercase hex SHA-512 of its JSON).
The server parses only the manifest and the field index; documents are served as the
compressed bytes they are stored as. Nothing is read at import time.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k3py.errors import K3pyError

GENERATED = Path(__file__).with_name("generated")
MANIFEST = "manifest.json"
FIELDS = "fields.json.gz"
V2_PROTOBUF = "openapi_v2.pb.gz"
FORMAT = 1
GENERATE = "python -m tools.openapi.generate"


class OpenAPIError(K3pyError):
    """The generated OpenAPI files are missing, unreadable or from another format."""


def _fail(path: Path, why: object) -> OpenAPIError:
    return OpenAPIError(
        f"cannot read the OpenAPI file {path}: {why}; reinstall k3py, or run `{GENERATE}` in "
        "a development checkout"
    )


@dataclass(frozen=True)
class Entry:
    """One generated document: its file under ``generated/`` and its hash."""

    file: str
    hash: str


@dataclass(frozen=True)
class Manifest:
    source: str
    kinds: tuple[str, ...]  # "apps/v1/Deployment", "v1/Pod", ...
    v2: Entry
    v3: dict[str, Entry]  # "api/v1", "apis/apps/v1", ... -> entry
    v2_protobuf: Entry | None = None  # the v2 document as gnostic's openapi.v2.Document


def read_bytes(name: str, directory: Path = GENERATED) -> bytes:
    path = directory / name
    try:
        return path.read_bytes()
    except OSError as error:
        raise _fail(path, error.strerror or error) from error


def read_json(name: str, directory: Path = GENERATED) -> Any:
    """A generated JSON file, gzip-compressed or not."""
    raw = read_bytes(name, directory)
    try:
        return json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)
    except (OSError, EOFError, ValueError) as error:
        raise _fail(directory / name, error) from error


def load_manifest(directory: Path = GENERATED) -> Manifest:
    content = read_json(MANIFEST, directory)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else None
        raise _fail(directory / MANIFEST, f"format {found!r}, this server reads format {FORMAT}")
    return Manifest(
        source=content["source"],
        kinds=tuple(content["kinds"]),
        v2=Entry(**content["v2"]),
        v3={path: Entry(**entry) for path, entry in content["v3"].items()},
        v2_protobuf=Entry(**content["v2_protobuf"]) if "v2_protobuf" in content else None,
    )


def file_name(group_version_path: str) -> str:
    """``apis/apps/v1`` → ``apis__apps__v1_openapi.json.gz``, as Kubernetes names its files."""
    return group_version_path.replace("/", "__") + "_openapi.json.gz"
