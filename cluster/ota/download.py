"""Downloading a bundle from the server over the node's authenticated connection, resumably.

The bytes go to ``<dest>.partial`` (synced as they arrive); a later call asks for the rest with
``Range: bytes=<have>-`` and appends, so an interrupted download (lost link, agent killed,
power cut) resumes where it stopped. A ``200`` to a ranged request (a server that ignores
Range) starts over. The finished file is renamed into place, so ``dest`` only ever holds a
whole download; verification (:mod:`k3py.cluster.ota.bundle`) comes after. ``fetch_range``
reads one span, for the blocks of a system bundle a board lacks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp

from k3py.errors import K3pyError

CHUNK = 256 * 1024
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(K3pyError):
    """The server refused or broke off a download; the message says which bundle and why."""


Progress = Callable[[int, int | None], None]


async def download(
    session: aiohttp.ClientSession, url: str, dest: Path, progress: Progress | None = None
) -> int:
    """Download ``url`` into ``dest``; the number of bytes this call transferred."""
    partial = dest.with_name(dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    transferred = 0
    async with session.get(url, headers=headers) as response:
        if response.status == 416 and have:  # nothing left: the previous call got it all
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) == have:
                partial.replace(dest)
                return 0
        if response.status not in (200, 206):
            text = (await response.text())[:200]
            raise DownloadError(f"cannot download {url}: HTTP {response.status} {text}")
        total_size: int | None = None
        if response.status == 206:
            found = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if found is None or int(found.group(1)) != have:
                raise DownloadError(f"{url}: the server resumed at the wrong offset")
            total_size = int(found.group(3)) if found.group(3).isdigit() else None
        else:
            have = 0
            total_size = response.content_length
        with partial.open("r+b" if have else "wb") as file:
            file.seek(have)
            file.truncate()
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    file.write(chunk)
                    transferred += len(chunk)
                    if progress is not None:
                        progress(have + transferred, total_size)
            finally:
                file.flush()
                os.fsync(file.fileno())
    size = partial.stat().st_size
    if total_size is not None and size != total_size:
        raise DownloadError(f"{url}: the download ended at {size} of {total_size} bytes")
    partial.replace(dest)
    return transferred


async def fetch_range(session: aiohttp.ClientSession, url: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``url`` from ``offset`` (one block of a system bundle)."""
    headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
    async with session.get(url, headers=headers) as response:
        if response.status != 206:
            raise DownloadError(f"{url}: a range request was answered {response.status}")
        data = await response.read()
    if len(data) != length:
        raise DownloadError(f"{url}: {len(data)} bytes for a range of {length}")
    return data
