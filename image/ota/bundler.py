"""Signing keys and the writing of bundles (the format is :mod:`k3py.cluster.ota.bundle`'s).

A firmware bundle carries the k3py wheel (what ``install-firmware`` puts in an image); a system
bundle carries an image's root slot A, read in place from the ``.img`` at the offset its build
manifest records, with the slot's block-hash index. Bundles are byte-identical for identical
inputs (fixed tar metadata, sorted JSON), so a rebuild can be compared with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from k3py.cluster.ota import blocks
from k3py.cluster.ota.bundle import (
    ANY,
    INDEX_PAYLOAD,
    MANIFEST,
    SIGNATURE,
    SLOT_PAYLOAD,
    BundleError,
    Manifest,
    Payload,
    key_id,
)


def keygen(private_path: Path, public_path: Path) -> str:
    """A new Ed25519 key pair in PEM (the private key readable by its owner only); its id."""
    for path in (private_path, public_path):
        if path.exists():
            raise BundleError(f"{path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(private)
    public_path.write_bytes(public)
    return key_id(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise BundleError(f"signing key {path} does not exist (k3py ota keygen)") from None
    except (ValueError, TypeError) as err:
        raise BundleError(f"signing key {path} is unreadable ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"signing key {path} is not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class Source:
    """A payload's bytes: ``size`` bytes of ``path`` from ``offset``."""

    name: str
    role: str
    path: Path
    offset: int
    size: int
    block_size: int | None = None

    def open(self) -> BinaryIO:
        file = self.path.open("rb")
        file.seek(self.offset)
        return file

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.open() as file:
            left = self.size
            while left:
                chunk = file.read(min(left, 1 << 20))
                if not chunk:
                    raise BundleError(f"{self.path} ended before its {self.name} payload")
                digest.update(chunk)
                left -= len(chunk)
        return digest.hexdigest()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uname = info.gname = "root"
    return info


def write_bundle(
    out: Path,
    key: Ed25519PrivateKey,
    *,
    kind: str,
    version: str,
    architecture: str,
    compatible: Sequence[str],
    minimum_version: str | None,
    sources: Sequence[Source],
    extra_payloads: Sequence[tuple[str, str, bytes]] = (),
    extra: dict[str, object] | None = None,
) -> Manifest:
    """Hash every payload, sign the manifest, and write the bundle (atomically)."""
    payloads = [Payload(s.name, s.size, s.sha256(), s.role, s.block_size) for s in sources]
    payloads += [Payload(n, len(d), hashlib.sha256(d).hexdigest(), r) for n, r, d in extra_payloads]
    manifest = Manifest(kind, version, architecture, tuple(compatible), minimum_version,
                        tuple(payloads), key_id(key.public_key()), dict(extra or {}))  # fmt: skip
    raw = manifest.encode()
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:", format=tarfile.USTAR_FORMAT) as archive:
        archive.addfile(_info(MANIFEST, len(raw)), io.BytesIO(raw))
        signature = key.sign(raw)
        archive.addfile(_info(SIGNATURE, len(signature)), io.BytesIO(signature))
        for name, _role, data in extra_payloads:
            archive.addfile(_info(name, len(data)), io.BytesIO(data))
        for source in sources:
            with source.open() as file:
                archive.addfile(_info(source.name, source.size), file)
    partial.replace(out)
    return manifest


def wheel_version(wheel: Path) -> str:
    match = re.fullmatch(r"k3py-([^-]+)-.*\.whl", wheel.name)
    if match is None:
        raise BundleError(f"{wheel.name} is not a k3py wheel name (k3py-VERSION-….whl)")
    return match.group(1)


def firmware_bundle(
    out: Path, key: Ed25519PrivateKey, wheel: Path, *, boards: Sequence[str],
    minimum_version: str | None,
) -> Manifest:  # fmt: skip
    source = Source(wheel.name, "wheel", wheel, 0, wheel.stat().st_size)
    return write_bundle(out, key, kind="firmware", version=wheel_version(wheel), architecture=ANY,
                        compatible=boards or [ANY], minimum_version=minimum_version,
                        sources=[source])  # fmt: skip


def image_manifest(image: Path) -> dict[str, object]:
    """The build manifest written beside an image (``<name>.manifest.json``)."""
    candidates = [image.with_name(image.name.removesuffix(".img") + ".manifest.json"),
                  image.with_name("manifest.json")]  # fmt: skip
    for path in candidates:
        if path.exists():
            data: dict[str, object] = json.loads(path.read_text())
            if image.name == f"{data.get('board')}-{data.get('role')}.img" or path == candidates[0]:
                return data
    raise BundleError(f"no build manifest beside {image} (expected {candidates[0].name})")


def system_bundle(
    out: Path, key: Ed25519PrivateKey, image: Path, *, minimum_version: str | None,
    block_size: int = blocks.BLOCK_SIZE,
) -> Manifest:  # fmt: skip
    """Slot A of ``image`` with its block index; the manifest names the image's board."""
    facts = image_manifest(image)
    partitions = facts.get("partitions")
    slot = next((p for p in partitions if p.get("name") == "rootA"), None) if isinstance(
        partitions, list) else None  # fmt: skip
    if slot is None:
        raise BundleError(f"the build manifest of {image} records no rootA partition")
    source = Source(SLOT_PAYLOAD, "slot", image, int(slot["start"]), int(slot["size"]), block_size)
    # The slot's version is its firmware's (the wheel installed), not the building k3py's.
    wheel = facts.get("firmware")
    version = (wheel_version(Path(str(wheel["wheel"]))) if isinstance(wheel, dict)
               and "wheel" in wheel else str(facts["k3py_version"]))  # fmt: skip
    with source.open() as file:
        window = _Window(file, source.size)
        index = b"".join(hashlib.sha256(b).digest() for b in blocks.blocks_of(window, block_size))
    return write_bundle(
        out, key, kind="system", version=version,
        architecture=str(facts["architecture"]), compatible=[str(facts["board"])],
        minimum_version=minimum_version, sources=[source],
        extra_payloads=[(INDEX_PAYLOAD, "index", index)],
        extra={"role": facts.get("role"), "imageSha256": facts.get("sha256")},
    )  # fmt: skip


class _Window(io.RawIOBase):
    """``size`` bytes of an open file from its current position, as a readable stream."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file, self._left = file, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._file.read(n)
        self._left -= len(data)
        return data
