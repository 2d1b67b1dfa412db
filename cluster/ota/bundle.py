"""Signed update bundles: their format, and everything a board checks before it changes anything.

A bundle is an uncompressed tar (so each payload sits at a fixed offset, which HTTP Range and the
block delta rely on) holding, in this order, ``manifest.json``, ``manifest.sig`` (the raw Ed25519
signature of the manifest's bytes) and the payloads the manifest lists with their size and
SHA-256. The manifest says the bundle's kind (``firmware``: the k3py wheel; ``system``: a root
slot image and its block-hash index), version, architecture, compatible boards and the minimum
version a board must run to take it.

:func:`verify` checks the signature against the image's public key first (a board without a key
refuses every bundle), then the manifest's rules against the running system, then every payload's
size and hash; only a bundle that passes all of them may be installed. Versions compare as
dotted numbers (what k3py's versions are); the ``packaging`` library is not a board dependency.
``cryptography`` is imported by the functions that check a signature, not with the module: the
agent imports this module at start, and only an update needs the library (about 5 MB of an
ARM64 board's agent, which otherwise never loads it).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k3py.errors import K3pyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
KINDS = ("firmware", "system")
# A system bundle's payloads: the root slot and its block-hash index (boards read them by name).
SLOT_PAYLOAD = "rootfs.img"
INDEX_PAYLOAD = "rootfs.blocks"
# In the root slot, not on the data partition: a system bundle can rotate the key with the slot.
IMAGE_KEY_PATH = Path("/usr/lib/k3py/ota-key.pub")
ANY = "any"


class BundleError(K3pyError):
    """A bundle is refused; the message is the reason a plan's status shows."""


@dataclass(frozen=True)
class Payload:
    name: str
    size: int
    sha256: str
    role: str  # "wheel", "slot" or "index"
    block_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "role": self.role, "size": self.size,
                                "sha256": self.sha256}  # fmt: skip
        if self.block_size is not None:
            data["blockSize"] = self.block_size
        return data


@dataclass(frozen=True)
class Manifest:
    kind: str
    version: str
    architecture: str
    compatible: tuple[str, ...]
    minimum_version: str | None
    payloads: tuple[Payload, ...]
    key_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "version": self.version,
            "architecture": self.architecture,
            "compatible": list(self.compatible),
            "minimumVersion": self.minimum_version,
            "keyId": self.key_id,
            "payloads": [p.to_json() for p in self.payloads],
            **self.extra,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode() + b"\n"

    def payload(self, role: str) -> Payload:
        for item in self.payloads:
            if item.role == role:
                return item
        raise BundleError(f"the {self.kind} bundle has no {role} payload")

    @classmethod
    def decode(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise BundleError(f"unknown bundle format {data.get('format')!r} (expected 1)")
            if data["kind"] not in KINDS:
                raise BundleError(f"unknown bundle kind {data['kind']!r}")
            payloads = tuple(
                Payload(
                    str(p["name"]),
                    int(p["size"]),
                    str(p["sha256"]),
                    str(p["role"]),
                    int(p["blockSize"]) if "blockSize" in p else None,
                )  # fmt: skip
                for p in data["payloads"]
            )
            known = {"format", "kind", "version", "architecture", "compatible", "minimumVersion",
                     "keyId", "payloads"}  # fmt: skip
            return cls(
                kind=str(data["kind"]),
                version=str(data["version"]),
                architecture=str(data["architecture"]),
                compatible=tuple(str(b) for b in data["compatible"]),
                minimum_version=data["minimumVersion"],
                payloads=payloads,
                key_id=str(data.get("keyId", "")),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise BundleError(f"the bundle's manifest is malformed ({err})") from None


def version_key(version: str) -> tuple[int, ...]:
    """``0.1.10`` > ``0.1.9``; a local or pre-release suffix after the numbers is ignored."""
    match = re.match(r"\d+(\.\d+)*", version.strip().lstrip("v"))
    if match is None:
        raise BundleError(f"version {version!r} is not a dotted number")
    return tuple(int(part) for part in match.group(0).split("."))


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path = IMAGE_KEY_PATH) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(
            f"this system has no update key ({path}): it was built without "
            "'k3py image build --ota-key', so every bundle is refused"
        ) from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as err:
        raise BundleError(f"the update key {path} is unreadable ({err})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"the update key {path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class Running:
    """What the board runs, against which a bundle's rules are checked."""

    version: str
    architecture: str
    board: str


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data, in the bundle file
    size: int


def members(path: Path) -> dict[str, Member]:
    """The bundle's members and where their data lies; a truncated bundle is refused."""
    found: dict[str, Member] = {}
    try:
        with tarfile.open(path, "r:") as archive:
            for info in archive:
                if not info.isfile():
                    raise BundleError(f"bundle member {info.name!r} is not a regular file")
                found[info.name] = Member(info.name, info.offset_data, info.size)
    except tarfile.TarError as err:
        raise BundleError(f"{path} is not a bundle, or it is truncated ({err})") from None
    size = path.stat().st_size
    for member in found.values():
        if member.offset + member.size > size:
            raise BundleError(f"{path} is truncated (member {member.name} ends past the file)")
    return found


def _read(path: Path, member: Member) -> bytes:
    with path.open("rb") as file:
        file.seek(member.offset)
        return file.read(member.size)


def unverified_manifest(path: Path) -> Manifest:
    """The manifest without its signature checked: only to name or list a bundle (the server
    stores bundles without the key; boards verify)."""
    found = members(path)
    if MANIFEST not in found:
        raise BundleError(f"{path.name} is not a k3py bundle (no manifest.json)")
    return Manifest.decode(_read(path, found[MANIFEST]))


def bundle_name(manifest: Manifest) -> str:
    """The name a bundle is stored and downloaded under."""
    return f"{manifest.kind}-{manifest.version}.k3pyb"


def read_manifest(path: Path, public_key: Ed25519PublicKey) -> tuple[Manifest, dict[str, Member]]:
    """The manifest, once its signature holds (nothing else in the bundle is trusted before)."""
    from cryptography.exceptions import InvalidSignature

    found = members(path)
    if MANIFEST not in found or SIGNATURE not in found:
        raise BundleError(f"{path} has no signed manifest (not a k3py bundle)")
    raw = _read(path, found[MANIFEST])
    try:
        public_key.verify(_read(path, found[SIGNATURE]), raw)
    except InvalidSignature:
        raise BundleError(
            "the bundle's signature does not match this system's update key "
            f"(key {key_id(public_key)}): tampered, or signed with another key"
        ) from None
    return Manifest.decode(raw), found


def check_rules(manifest: Manifest, running: Running, *, kind: str | None = None) -> None:
    """The manifest's rules against the running system; each refusal says which rule."""
    if kind is not None and manifest.kind != kind:
        raise BundleError(f"a {manifest.kind} bundle was given where a {kind} bundle is needed")
    if manifest.architecture not in (ANY, running.architecture):
        raise BundleError(
            f"the bundle is for {manifest.architecture}; this system is {running.architecture}"
        )
    boards = manifest.compatible
    if boards and ANY not in boards and running.board not in boards:
        raise BundleError(
            f"the bundle is for boards {', '.join(boards)}; this one is {running.board}"
        )
    minimum = manifest.minimum_version
    if minimum is not None and version_key(running.version) < version_key(minimum):
        raise BundleError(
            f"the bundle needs at least version {minimum} running; "
            f"this system runs {running.version}"
        )
    if version_key(manifest.version) < version_key(running.version):
        raise BundleError(
            f"the bundle's version {manifest.version} is older than the running "
            f"{running.version} (a downgrade)"
        )


def check_payloads(path: Path, manifest: Manifest, found: dict[str, Member]) -> None:
    for payload in manifest.payloads:
        member = found.get(payload.name)
        if member is None:
            raise BundleError(f"the bundle lacks its payload {payload.name}")
        if member.size != payload.size:
            raise BundleError(
                f"payload {payload.name} has {member.size} bytes; the manifest says {payload.size}"
            )
        digest = hashlib.sha256()
        with path.open("rb") as file:
            file.seek(member.offset)
            left = member.size
            while left:
                chunk = file.read(min(left, 1 << 20))
                if not chunk:
                    raise BundleError(f"{path} is truncated (in payload {payload.name})")
                digest.update(chunk)
                left -= len(chunk)
        if digest.hexdigest() != payload.sha256:
            raise BundleError(f"payload {payload.name} does not match its SHA-256 (tampered)")


def verify(
    path: Path, public_key: Ed25519PublicKey, running: Running | None, *, kind: str | None = None
) -> Manifest:
    """Signature, rules (when ``running`` is given), then every payload's size and hash."""
    manifest, found = read_manifest(path, public_key)
    if running is not None:
        check_rules(manifest, running, kind=kind)
    check_payloads(path, manifest, found)
    return manifest
