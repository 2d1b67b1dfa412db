"""A node takes a system bundle: the inactive root slot written, checked, booted on trial.

:func:`apply_system` verifies before it changes anything: it reads the bundle's manifest,
signature and block index from the server with Range requests (the slot payload itself is never
downloaded whole), checks the signature with the image's key, the manifest's rules against the
running system and the index against the manifest's SHA-256. Only then does it write the
inactive slot: every block whose hash the running slot already has is copied from the disk, the
others are fetched (consecutive ones in one request), and each is checked against the index
before it is written. The slot's first block goes last, so a write cut short never leaves a
recognisable file system; the whole slot is then read back and must match the manifest's
SHA-256. Its ext4 label becomes ``root-a``/``root-b`` (the command line U-Boot builds names the
slot by label), and the boot state (:mod:`k3py.cluster.ota.bootenv`) switches to it on trial,
for a counted number of boots. After the reboot, :func:`settle_boot` marks a slot on trial good
only once the server reports this node Ready; a slot that never gets there runs out of attempts
and U-Boot boots the previous one by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import subprocess
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import aiohttp

from k3py.cluster.ota import blocks
from k3py.cluster.ota.bootenv import ATTEMPTS, BootEnv, State, other, slot_device
from k3py.cluster.ota.bundle import (
    INDEX_PAYLOAD,
    MANIFEST,
    SIGNATURE,
    SLOT_PAYLOAD,
    BundleError,
    Manifest,
    Running,
    check_rules,
    key_id,
    load_public_key,
)
from k3py.cluster.ota.download import fetch_range
from k3py.cluster.ota.rollout import INSTALLING, VERIFYING

logger = logging.getLogger("k3py.agent.ota")
HEADER = tarfile.BLOCKSIZE
MAX_RUN = 16  # blocks fetched in one Range request (1 MiB at 64 KiB blocks)


@dataclass(frozen=True)
class RemoteMember:
    name: str
    offset: int
    size: int


async def remote_members(
    session: aiohttp.ClientSession, url: str, stop: str
) -> dict[str, RemoteMember]:
    """The bundle's tar members up to and including ``stop``, read header by header."""
    found: dict[str, RemoteMember] = {}
    offset = 0
    for _ in range(16):
        raw = await fetch_range(session, url, offset, HEADER)
        try:
            info = tarfile.TarInfo.frombuf(raw, "utf-8", "surrogateescape")
        except tarfile.TarError as err:
            raise BundleError(f"the bundle's member at {offset} is unreadable ({err})") from None
        found[info.name] = RemoteMember(info.name, offset + HEADER, info.size)
        if info.name == stop:
            return found
        offset += HEADER + -(-info.size // HEADER) * HEADER
    raise BundleError(f"the bundle has no {stop} among its first members")


async def read_verified(
    session: aiohttp.ClientSession, url: str, key_path: Path, running: Running
) -> tuple[Manifest, RemoteMember, bytes]:
    """Manifest (signature and rules checked), where the slot payload lies, its checked index."""
    from cryptography.exceptions import InvalidSignature  # only an update needs the library

    key = load_public_key(key_path)
    found = await remote_members(session, url, SLOT_PAYLOAD)
    if MANIFEST not in found or SIGNATURE not in found or INDEX_PAYLOAD not in found:
        raise BundleError("the bundle lacks its manifest, signature or block index")
    raw = await fetch_range(session, url, found[MANIFEST].offset, found[MANIFEST].size)
    signature = await fetch_range(session, url, found[SIGNATURE].offset, found[SIGNATURE].size)
    try:
        key.verify(signature, raw)
    except InvalidSignature:
        raise BundleError(
            "the bundle's signature does not match this system's update key "
            f"(key {key_id(key)}): tampered, or signed with another key"
        ) from None
    manifest = Manifest.decode(raw)
    check_rules(manifest, running, kind="system")
    index_payload, slot_payload = manifest.payload("index"), manifest.payload("slot")
    member = found[INDEX_PAYLOAD]
    index = await fetch_range(session, url, member.offset, member.size)
    if hashlib.sha256(index).hexdigest() != index_payload.sha256:
        raise BundleError("the bundle's block index does not match its SHA-256 (tampered)")
    slot = found[SLOT_PAYLOAD]
    if slot.size != slot_payload.size:
        raise BundleError(f"the slot payload has {slot.size} bytes; the manifest says "
                          f"{slot_payload.size}")  # fmt: skip
    block_size = slot_payload.block_size or blocks.BLOCK_SIZE
    if len(blocks.digests(index)) != -(-slot.size // block_size):
        raise BundleError("the block index does not cover the slot payload")
    return manifest, slot, index


def _hash_device(device: Path, size: int) -> str:
    digest = hashlib.sha256()
    with device.open("rb") as file:
        # The written blocks are synced; drop them from the page cache so the hash is of what
        # the card gives back, not of what the kernel still holds.
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        left = size
        while left:
            chunk = file.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


async def write_slot(
    session: aiohttp.ClientSession,
    url: str,
    slot: RemoteMember,
    index: bytes,
    target: Path,
    local: dict[bytes, blocks.LocalBlock],
    block_size: int,
) -> blocks.Delta:
    """The new slot into ``target``: local blocks copied, missing ones fetched, all checked."""
    wanted = blocks.digests(index)
    delta = blocks.plan(index, local, block_size)
    missing = set(delta.missing)
    handles: dict[Path, BinaryIO] = {}

    def length_of(number: int) -> int:
        return min(block_size, slot.size - number * block_size)

    with target.open("r+b") as out, contextlib.ExitStack() as stack:
        out.seek(0)
        out.write(b"\0" * length_of(0))  # until the end, no file system is recognisable here
        out.flush()
        os.fsync(out.fileno())
        first = b""
        number = 0
        while number < len(wanted):
            if number in missing:
                run = 1
                while run < MAX_RUN and number + run in missing:
                    run += 1
                length = sum(length_of(n) for n in range(number, number + run))
                data = await fetch_range(session, url, slot.offset + number * block_size, length)
                chunks = [data[i : i + block_size] for i in range(0, length, block_size)]
            else:
                source = local[wanted[number]]
                handle = handles.get(source.path)
                if handle is None:
                    handle = handles[source.path] = stack.enter_context(source.path.open("rb"))
                handle.seek(source.offset)
                chunks = [handle.read(block_size)[: length_of(number)]]
            for chunk in chunks:
                if hashlib.sha256(chunk.ljust(block_size, b"\0")).digest() != wanted[number]:
                    raise BundleError(f"block {number} of the slot does not match the index")
                if number == 0:
                    first = chunk
                else:
                    out.seek(number * block_size)
                    out.write(chunk)
                number += 1
        out.flush()
        os.fsync(out.fileno())
        out.seek(0)
        out.write(first)
        out.flush()
        os.fsync(out.fileno())
    return delta


@dataclass
class SystemSlots:
    """Where slots and the boot state are; tests point these at files."""

    env: BootEnv
    running: str  # "a" or "b"
    device: Callable[[str], Path]  # slot letter → block device (or file)
    relabel: Callable[[Path, str], None]

    @classmethod
    def of_this_board(cls) -> SystemSlots:
        from k3py.cluster.ota.bootenv import running_slot

        running = running_slot()
        return cls(BootEnv(), running, lambda slot: slot_device(slot, running), e2label)


def e2label(device: Path, label: str) -> None:
    result = subprocess.run(["e2label", str(device), label], capture_output=True, text=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        raise BundleError(f"cannot label {device} {label}: {result.stderr.strip()}")


async def apply_system(
    session: aiohttp.ClientSession,
    url: str,
    running: Running,
    slots: SystemSlots,
    *,
    key_path: Path,
    report: Callable[[str], Awaitable[None]],
) -> tuple[Manifest, blocks.Delta]:
    """Verify the bundle at ``url``, write the inactive slot, switch the boot to it on trial."""
    manifest, slot, index = await read_verified(session, url, key_path, running)
    target_slot = other(slots.running)
    target = slots.device(target_slot)
    payload = manifest.payload("slot")
    block_size = payload.block_size or blocks.BLOCK_SIZE
    local = await asyncio.to_thread(blocks.local_blocks, [slots.device(slots.running)],
                                    block_size)  # fmt: skip
    await report(INSTALLING)  # from here on the inactive slot changes
    delta = await write_slot(session, url, slot, index, target, local, block_size)
    await report(VERIFYING)
    if await asyncio.to_thread(_hash_device, target, slot.size) != payload.sha256:
        raise BundleError(f"slot {target_slot.upper()} does not read back as written")
    await asyncio.to_thread(slots.relabel, target, f"root-{target_slot}")
    await asyncio.to_thread(slots.env.switch_to, target_slot)
    logger.info("slot %s holds %s (%d of %d blocks downloaded); booting it on trial",
                target_slot.upper(), manifest.version, len(delta.missing), delta.total)  # fmt: skip
    return manifest, delta


async def settle_boot(
    slots: SystemSlots, node_ready: Callable[[], Awaitable[bool]], poll: float = 2.0
) -> str | None:
    """After a boot: a slot on trial is marked good once the node is Ready; a slot that is not
    on trial gets its counter back at once. When the slot on trial is the other one, U-Boot
    fell back from it: the order goes back to this slot and the reason is returned."""
    state = await asyncio.to_thread(slots.env.read)
    running = slots.running
    if state.trial == running:
        while True:  # (a poll of the API: no event to wait on)
            if await node_ready():
                break
            await asyncio.sleep(poll)
        await asyncio.to_thread(slots.env.mark_good, running)
        logger.info("slot %s on trial is Ready: marked good", running.upper())
        return None
    if state.trial:
        failed = state.trial
        await asyncio.to_thread(
            slots.env.write, State((running, failed), {running: ATTEMPTS, failed: 0})
        )
        return (f"slot {failed.upper()} did not become Ready within {ATTEMPTS} boots; "
                f"the board booted slot {running.upper()} again")  # fmt: skip
    await asyncio.to_thread(slots.env.mark_good, running)
    return None
