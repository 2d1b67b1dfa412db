"""The served OpenAPI documents, as the server holds them: hash plus compressed JSON.

Read from the generated files on first use and kept for the life of the process (about a
quarter of a megabyte for all of them): the v2 document and one v3 document per group/version.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

from k3py.cluster.server.openapi import data


@dataclass(frozen=True)
class Document:
    """One served document: its hash and its gzip-compressed JSON."""

    hash: str
    gzipped: bytes

    def json(self) -> bytes:
        return gzip.decompress(self.gzipped)


@dataclass(frozen=True)
class Documents:
    v2: Document
    v3: dict[str, Document]  # "api/v1", "apis/apps/v1", ...
    v2_protobuf: Document | None = None  # gnostic's openapi.v2.Document, gzip-compressed


def load_documents(directory: Path = data.GENERATED) -> Documents:
    manifest = data.load_manifest(directory)

    def read(entry: data.Entry) -> Document:
        return Document(entry.hash, data.read_bytes(entry.file, directory))

    return Documents(
        v2=read(manifest.v2),
        v3={path: read(entry) for path, entry in manifest.v3.items()},
        v2_protobuf=read(manifest.v2_protobuf) if manifest.v2_protobuf else None,
    )


@functools.cache
def served_documents() -> Documents:
    """The documents of this process, read on first call (immutable afterwards)."""
    return load_documents()
