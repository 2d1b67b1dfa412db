"""Unpacking ``.deb`` files into a merged-usr tree without dpkg, tar or emulation.

A ``.deb`` is an ``ar`` archive whose ``data.tar.*`` member holds the files. They are written
with their modes and owners into the target tree, with ``/bin``, ``/sbin`` and ``/lib*`` mapped
into ``/usr`` (the merged-usr layout Debian uses since bookworm; the top-level names become
symlinks). Each written path is recorded with the package it came from, so the ELF audit and the
manifest can name a file's package. Maintainer scripts never run.
"""

from __future__ import annotations

import io
import lzma
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from k3py.image.errors import ImageError

MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def merged_path(path: str) -> str:
    """``bin/sh`` → ``usr/bin/sh``; anything outside the merged directories stays."""
    head, _, _ = path.partition("/")
    return f"usr/{path}" if head in MERGED_DIRS else path


def create_merged_links(root: Path) -> None:
    for name in MERGED_DIRS[:3]:
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"usr/{name}")


def _ar_members(file: IO[bytes], deb: Path) -> Iterator[tuple[str, bytes]]:
    if file.read(8) != b"!<arch>\n":
        raise ImageError(f"{deb} is not a Debian package (no ar header); delete it and rebuild")
    while header := file.read(60):
        if len(header) < 60:
            break
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        data = file.read(size)
        if size % 2:
            file.read(1)
        yield name, data


def _decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    if name.endswith(".tar"):
        return data
    raise ImageError(f"unsupported compression of {name}")


def data_tar(deb: Path) -> tarfile.TarFile:
    with deb.open("rb") as file:
        for name, data in _ar_members(file, deb):
            if name.startswith("data.tar"):
                return tarfile.open(fileobj=io.BytesIO(_decompress(name, data)), mode="r:")
    raise ImageError(f"{deb} has no data.tar member; delete it from the cache and rebuild")


def _relink(original: str, mapped: str, target: str) -> str:
    """Keep a relative symlink pointing at the same file after its own path moved into usr/."""
    if target.startswith("/") or original == mapped:
        return target
    absolute = posixpath.normpath(posixpath.join(posixpath.dirname(original), target))
    return posixpath.relpath(merged_path(absolute), posixpath.dirname(mapped))


def unpack(deb: Path, root: Path, owner: str, owners: dict[str, str]) -> None:
    """Write one package's files under ``root`` and record each path's ``owner``."""
    with data_tar(deb) as archive:
        for member in archive:
            original = posixpath.normpath(member.name.removeprefix("./"))
            if original in {".", ""} or original.startswith(".."):
                continue
            path = merged_path(original)
            target = root / path
            if member.isdir():
                if target.is_symlink() or target.is_dir():
                    continue  # an existing directory (or merged-usr link) already serves
                target.mkdir(parents=True, exist_ok=True)
                os.chown(target, member.uid, member.gid)
                os.chmod(target, member.mode)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if member.issym():
                link = _relink(original, path, member.linkname)
                if posixpath.normpath(posixpath.join(posixpath.dirname(path), link)) == path:
                    continue  # bin/x → /usr/bin/x became a link to itself: the file is there
                os.symlink(link, target)
                os.lchown(target, member.uid, member.gid)
            elif member.islnk():
                source = root / merged_path(posixpath.normpath(member.linkname.removeprefix("./")))
                os.link(source, target)
            elif member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                with target.open("wb") as out:
                    shutil.copyfileobj(extracted, out)
                os.chown(target, member.uid, member.gid)
                os.chmod(target, member.mode)
            else:
                continue  # device nodes and fifos: none in Debian's packages we use
            owners[path] = owner
