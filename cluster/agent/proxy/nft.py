"""Running nftables transactions: the text of one ``nft -f`` batch in, success or an error out.

Every change the proxy makes is one batch, which the kernel commits atomically: a packet sees
the table before or after it, never half of it. ``nft`` is started per batch (a few
milliseconds) rather than kept running, so a crashed ``nft`` can never hold a half-read batch.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Protocol

from k3py.cluster.agent.proxy.rules import Existing
from k3py.errors import K3pyError


class NftError(K3pyError):
    """nft refused a batch (nothing of it was applied)."""


class Nftables(Protocol):
    async def apply(self, batch: str) -> None: ...

    async def existing(self, table: str) -> Existing:
        """The chains, sets and maps of ``table`` ("family name"); empty when it is absent."""
        ...


class NftCommand:
    """The ``nft`` command, optionally inside a network namespace (``ip netns exec``)."""

    def __init__(self, netns: str = "") -> None:
        self._prefix = ("ip", "netns", "exec", netns) if netns else ()

    async def _run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                *self._prefix,
                "nft",
                *args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except FileNotFoundError:
            raise NftError("the nft command is missing (Debian package nftables)") from None
        out, err = await process.communicate(stdin.encode())
        return process.returncode or 0, out.decode(), err.decode()

    async def apply(self, batch: str) -> None:
        if not batch:
            return
        code, _, err = await self._run("-f", "-", stdin=batch)
        if code != 0:
            raise NftError(f"nft refused the batch: {err.strip()[:2000]}")

    async def existing(self, table: str) -> Existing:
        code, out, _ = await self._run("-j", "list", "table", *table.split())
        if code != 0:
            return Existing()
        items = json.loads(out).get("nftables", [])
        names = {
            kind: tuple(item[kind]["name"] for item in items if kind in item)
            for kind in ("chain", "set", "map")
        }
        return Existing(names["chain"], names["set"], names["map"])


class FakeNftables:
    """Records batches instead of running them (unit tests)."""

    def __init__(self) -> None:
        self.batches: list[str] = []
        self.fail_next = False

    async def apply(self, batch: str) -> None:
        if self.fail_next:
            self.fail_next = False
            raise NftError("nft refused the batch: injected failure")
        if batch:
            self.batches.append(batch)

    async def existing(self, table: str) -> Existing:
        return Existing()
