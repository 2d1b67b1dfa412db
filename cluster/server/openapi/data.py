"""The committed OpenAPI definitions data file: where it lives and how it is read.

``definitions.json.gz`` holds every schema definition the served kinds need, named as
Kubernetes names them, with references written as bare definition names (``"$ref":
"io.k8s.api.core.v1.PodSpec"``) so that one file serves both the v2 and v3 documents. It is
produced by :mod:`.generate` on the build host and only read here, never at import time.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from k3py.errors import K3pyError

DATA_FILE = Path(__file__).with_name("definitions.json.gz")
FORMAT = 1
GENERATE = "python -m k3py.cluster.server.openapi.generate"


class OpenAPIError(K3pyError):
    """The OpenAPI data file is missing, unreadable or from another format."""


def load(path: Path = DATA_FILE) -> dict[str, Any]:
    """The data file's content: ``format``, ``source``, ``kinds`` and ``definitions``."""
    try:
        content = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, ValueError) as error:
        raise OpenAPIError(
            f"cannot read the OpenAPI definitions {path}: {error}; reinstall k3py, or run "
            f"`{GENERATE}` in a development checkout"
        ) from error
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else None
        raise OpenAPIError(
            f"{path} has format {found!r}, this server reads format {FORMAT}; run `{GENERATE}`"
        )
    return content
