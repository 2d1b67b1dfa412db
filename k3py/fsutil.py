"""Writing files so that a crash or power cut leaves the old content or the new, never half.

Boards lose power without warning, and both the agent (its identity and pod cache) and the
server (keys, certificates, tokens, kubeconfig) keep state in small files. Each is written to a
temporary name in the same directory with its final mode from the first byte, flushed to disk,
then renamed over the old one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(
    path: Path, data: bytes, mode: int = 0o600, *, sync_directory: bool = False
) -> None:
    """Replace ``path`` with ``data`` in one step; ``sync_directory`` makes the rename durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_directory:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
