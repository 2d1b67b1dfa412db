"""Debian stable's ARM kernel packages, fetched from Debian's archive and unpacked for tests.

The current package is resolved through the archive itself: ``InRelease`` names the hash of
``main/binary-<arch>/Packages.xz``; that index names the metapackage (``linux-image-arm64``,
``linux-image-armmp-lpae``), whose ``Depends`` names the real ``linux-image-<release>`` package
and its file, size and SHA-256. Downloads are verified against those hashes and kept, unpacked
with ``dpkg-deb -x``, in a machine-wide cache (``/var/cache/k3py/test-kernels`` unless
``K3PY_TEST_KERNEL_CACHE`` says otherwise) so that fresh clones and later runs reuse them. A file
lock serialises concurrent test runs; trees of superseded kernels of the same flavour are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SUITE = "stable"
DEFAULT_CACHE = Path("/var/cache/k3py/test-kernels")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class UnpackedKernel:
    """A kernel package unpacked into ``root`` (``root/boot/config-<release>`` and modules)."""

    package: str
    version: str
    release: str
    root: Path


@dataclass(frozen=True)
class _PackageFile:
    package: str
    version: str
    filename: str
    sha256: str
    size: int


def cache_dir() -> Path:
    configured = os.environ.get("K3PY_TEST_KERNEL_CACHE")
    path = Path(configured) if configured else DEFAULT_CACHE
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
        return data


def _download(url: str, target: Path, sha256: str, size: int) -> None:
    partial = target.with_name(f"{target.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
        while chunk := response.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if partial.stat().st_size != size or digest.hexdigest() != sha256:
        partial.unlink()
        raise RuntimeError(f"{url}: size or SHA-256 differs from the archive's index")
    partial.replace(target)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _index_hash(in_release: str, member: str) -> tuple[str, int]:
    """The SHA-256 and size that InRelease lists for one index file."""
    section = in_release.split("\nSHA256:\n", 1)[1]
    for line in section.splitlines():
        if not line.startswith(" "):
            break
        digest, size, name = line.split()
        if name == member:
            return digest, int(size)
    raise RuntimeError(f"InRelease lists no {member}")


def _packages_index(directory: Path, arch: str) -> str:
    in_release = _get(f"{MIRROR}/dists/{SUITE}/InRelease").decode()
    member = f"main/binary-{arch}/Packages.xz"
    digest, size = _index_hash(in_release, member)
    cached = directory / f"Packages-{arch}.xz"
    if not cached.exists() or _sha256_of(cached) != digest:
        _download(f"{MIRROR}/dists/{SUITE}/{member}", cached, digest, size)
    return lzma.decompress(cached.read_bytes()).decode()


def _stanzas(index: str) -> dict[str, dict[str, str]]:
    by_package: dict[str, dict[str, str]] = {}
    for block in index.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            by_package[fields["Package"]] = fields
    return by_package


def resolve(index: str, metapackage: str) -> _PackageFile:
    """Follow ``metapackage``'s Depends to the ``linux-image-<release>`` package it pulls in."""
    packages = _stanzas(index)
    meta = packages[metapackage]
    real = next(
        m.group(1)
        for dep in meta["Depends"].split(",")
        if (m := re.match(r"\s*(linux-image-\S+)", dep))
    )
    fields = packages[real]
    return _PackageFile(
        package=real,
        version=fields["Version"],
        filename=fields["Filename"],
        sha256=fields["SHA256"],
        size=int(fields["Size"]),
    )


def _prune(directory: Path, flavour: str, keep: str) -> None:
    for old in directory.glob(f"linux-image-*-{flavour}_*"):
        if old.name != keep and ".part-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)


def fetch(flavour: str, arch: str) -> UnpackedKernel:
    """Debian stable's current ``linux-image-<flavour>`` for ``arch``, unpacked (cached)."""
    directory = cache_dir()
    with _locked(directory):
        wanted = resolve(_packages_index(directory, arch), f"linux-image-{flavour}")
        tree = directory / f"{wanted.package}_{wanted.version}"
        if not (tree / ".complete").exists():
            deb = directory / Path(wanted.filename).name
            if not deb.exists() or _sha256_of(deb) != wanted.sha256:
                _download(f"{MIRROR}/{wanted.filename}", deb, wanted.sha256, wanted.size)
            staging = directory / f"{tree.name}.part-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
            (staging / ".complete").write_text(wanted.sha256 + "\n")
            shutil.rmtree(tree, ignore_errors=True)
            staging.rename(tree)
            deb.unlink()
        _prune(directory, flavour, keep=tree.name)
    release = wanted.package.removeprefix("linux-image-")
    return UnpackedKernel(wanted.package, wanted.version, release, tree)


def hardlink_farm(source: Path, target: Path) -> None:
    """A copy of ``source`` whose files are hard links, so deleting one spares the cache."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another filesystem: fall back to a real copy
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link)
