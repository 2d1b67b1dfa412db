"""Loading images from ``<agent dir>/images/`` at start, as K3s's air-gap directory works.

Every ``*.tar`` (``docker save`` format, optionally ``.tar.gz``/``.tgz``, which the engine
unpacks itself) found there is loaded into the runtime once: what was imported is remembered in
``images/.imported.json`` by name, size and modification time, so a restart loads only new or
replaced archives. The pod sandbox image is made on the node when the runtime lacks it
(:mod:`k3py.cluster.agent.runtime.pause`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from k3py.cluster.agent.errors import ImageError
from k3py.cluster.agent.runtime import ContainerRuntime
from k3py.fsutil import write_atomic

logger = logging.getLogger("k3py.agent.images")

RECORD = ".imported.json"
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def _archives(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)
    )


async def load_airgap_images(runtime: ContainerRuntime, directory: Path) -> list[str]:
    """Load new archives from ``directory``; returns the image references loaded."""
    record_path = directory / RECORD
    try:
        record: dict[str, str] = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    loaded: list[str] = []
    changed = False
    for archive in _archives(directory):
        stat = archive.stat()
        fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}"
        if record.get(archive.name) == fingerprint:
            continue
        try:
            names = await runtime.load_images(archive)
        except ImageError as err:
            logger.warning("air-gap image not loaded", extra={"fields": {"error": str(err)}})
            continue
        logger.info(
            "loaded air-gap images",
            extra={"fields": {"archive": archive.name, "images": ",".join(names)}},
        )
        loaded.extend(names)
        record[archive.name] = fingerprint
        changed = True
    if changed:
        write_atomic(record_path, json.dumps(record, indent=1).encode(), 0o644)
    return loaded


async def ensure_sandbox_image(runtime: ContainerRuntime, reference: str) -> str:
    """The sandbox image's id, made from the node's own pause binary if the runtime lacks it."""
    found = await runtime.image_id(reference)
    if found is not None:
        return found
    # Only a first start needs tarfile (and the compressors it pulls in): import it here.
    from k3py.cluster.agent.runtime.pause import pause_rootfs

    logger.info("creating the pod sandbox image", extra={"fields": {"image": reference}})
    return await runtime.import_rootfs(pause_rootfs(), reference, ["/pause"])
