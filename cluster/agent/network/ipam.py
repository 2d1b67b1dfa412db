"""Pod addresses from the node's pod CIDR, recorded on disk (CNI host-local's model).

Each allocated address is a file ``<dir>/<address>`` holding the sandbox's container id, created
with ``O_EXCL``, so an address is never handed out twice, even when the agent is killed mid-way.
The files are not fsynced: what a power loss can take back belongs to sandboxes the power loss
stopped too (a node's sandboxes never outlive its boot), and an fsync per pod start costs tens of
milliseconds on a busy SD card; ``last_reserved`` remembers where the last allocation stopped so
that a released address is not reused at once (a late packet for the old pod must not reach a new
one). ``cidr`` records the pod CIDR the files belong to: if the node's CIDR ever changes, the old
allocations mean nothing and are dropped. :meth:`Ipam.reconcile` releases the addresses of
sandboxes that no longer exist: a sandbox removed while the agent was away, or one whose agent died
between allocating and wiring. The network's first address is the bridge's (the pods' gateway); the
network and broadcast addresses are never given out.

The host-local plugin is a Go binary that the agent would have to exec per pod; its on-disk format
is a few files, so it is written here rather than shipped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path

from k3py.cluster.agent.errors import AgentError


class IpamError(AgentError):
    """No address can be allocated (the pod CIDR is full, the directory is unusable)."""


class Ipam:
    def __init__(self, directory: Path, cidr: str) -> None:
        self.directory = directory
        self.network = ipaddress.ip_network(cidr, strict=False)
        self.gateway = self.network.network_address + 1
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        recorded = _read(directory / "cidr")
        if recorded != str(self.network):
            for entry in directory.iterdir():
                if _is_address(entry.name) or entry.name == "last_reserved":
                    entry.unlink(missing_ok=True)
            _write(directory / "cidr", str(self.network))
        self._by_sandbox: dict[str, str] = {}
        for entry in directory.iterdir():
            if _is_address(entry.name):
                owner = _read(entry)
                if owner:
                    self._by_sandbox[owner] = entry.name
                else:  # a crash between create and write: nobody holds it
                    entry.unlink(missing_ok=True)

    @property
    def allocations(self) -> dict[str, str]:
        """Sandbox id → address."""
        return dict(self._by_sandbox)

    def address_of(self, sandbox_id: str) -> str | None:
        return self._by_sandbox.get(sandbox_id)

    def allocate(self, sandbox_id: str) -> str:
        """The sandbox's address: the one it has, or the next free one after the last given."""
        known = self._by_sandbox.get(sandbox_id)
        if known is not None:
            return known
        hosts = self._candidates()
        last = _read(self.directory / "last_reserved")
        start = 0
        if last:
            with contextlib.suppress(ValueError):
                start = (hosts.index(last) + 1) % len(hosts)
        for offset in range(len(hosts)):
            address = hosts[(start + offset) % len(hosts)]
            try:
                fd = os.open(self.directory / address, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            try:
                os.write(fd, sandbox_id.encode())
            finally:
                os.close(fd)
            _write(self.directory / "last_reserved", address)
            self._by_sandbox[sandbox_id] = address
            return address
        raise IpamError(f"no free address in the pod CIDR {self.network}")

    def release(self, sandbox_id: str) -> str | None:
        address = self._by_sandbox.pop(sandbox_id, None)
        if address is not None:
            (self.directory / address).unlink(missing_ok=True)
        return address

    def reconcile(self, existing: set[str]) -> list[str]:
        """Release the addresses of sandboxes not in ``existing``; returns the released ones."""
        released = []
        for sandbox_id in [s for s in self._by_sandbox if s not in existing]:
            address = self.release(sandbox_id)
            if address is not None:
                released.append(address)
        return released

    def _candidates(self) -> list[str]:
        return [str(a) for a in self.network.hosts() if a != self.gateway]


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)
