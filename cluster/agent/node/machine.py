"""What this machine is and has, read from the kernel: capacity, addresses, versions, pressure.

Capacity is the real machine's (CPUs the agent may use, ``MemTotal``, the data directory's
filesystem, the pod limit); allocatable keeps the kubelet's default hard eviction threshold of
100 MiB of memory back. Pressure follows the kubelet's default eviction signals: memory
available below 100 MiB, less than 10 % of the data filesystem free, or more than 95 % of the
PID space in use.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

from k3py import __version__

KUBERNETES_VERSION = "v1.32.0"
# The board a k3py image was built for (``k3py image build --board``), baked into its root slot;
# absent on machines k3py was installed on. Bundles name the boards they fit.
BOARD_FILE = Path("/usr/lib/k3py/board")
BOARD_LABEL = "k3py.io/board"
EVICTION_MEMORY = 100 * 1024 * 1024
_ARCHES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "armv8l": "arm",
}


def kubelet_version() -> str:
    """The version a Node reports, in K3s's form (``v1.32.0+k3s1`` there)."""
    return f"{KUBERNETES_VERSION}+k3py-{__version__}"


def architecture() -> str:
    machine = platform.machine().lower()
    return _ARCHES.get(machine, machine)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    values: dict[str, int] = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return values


def os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "Linux"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _source_address(host: str) -> str:
    """The local address the kernel would use to reach ``host`` (a route lookup only)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 6443))
            return str(probe.getsockname()[0])
    except OSError:
        return ""


def node_ip(server_url: str) -> str:
    """The address this machine uses to reach the server (no packet is sent)."""
    address = _source_address(urlparse(server_url).hostname or "192.0.2.1")
    if address and not address.startswith("127.") and address != "::1":
        return address
    # A server on loopback: advertise the address of the default route instead (192.0.2.1 is
    # a documentation address; only the route to it is looked up).
    return _source_address("192.0.2.1") or address or "127.0.0.1"


def board_name(board_file: Path = BOARD_FILE) -> str:
    try:
        return board_file.read_text().strip()
    except OSError:
        return ""


class Machine(NamedTuple):
    cpus: int
    memory_bytes: int
    storage_bytes: int
    max_pods: int
    machine_id: str
    boot_id: str
    kernel: str
    os_image: str
    arch: str
    board: str = ""  # the image's board, "" when not running from a k3py image

    @classmethod
    def read(cls, data_dir: Path, max_pods: int) -> Machine:
        stat = os.statvfs(data_dir if data_dir.exists() else "/")
        machine_id = _read("/etc/machine-id")
        return cls(
            cpus=cpu_count(),
            memory_bytes=meminfo().get("MemTotal", 0),
            storage_bytes=stat.f_blocks * stat.f_frsize,
            max_pods=max_pods,
            machine_id=machine_id,
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            kernel=platform.release(),
            os_image=os_image(),
            arch=architecture(),
            board=board_name(),
        )

    def capacity(self) -> dict[str, str]:
        return {
            "cpu": str(self.cpus),
            "memory": f"{self.memory_bytes // 1024}Ki",
            "ephemeral-storage": f"{self.storage_bytes // 1024}Ki",
            "pods": str(self.max_pods),
        }

    def allocatable(self) -> dict[str, str]:
        memory = max(0, self.memory_bytes - EVICTION_MEMORY)
        return {**self.capacity(), "memory": f"{memory // 1024}Ki"}

    def node_info(self, runtime_version: str) -> dict[str, str]:
        version = kubelet_version()
        return {
            "machineID": self.machine_id,
            "systemUUID": self.machine_id,
            "bootID": self.boot_id,
            "kernelVersion": self.kernel,
            "osImage": self.os_image,
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": version,
            "kubeProxyVersion": version,
            "operatingSystem": "linux",
            "architecture": self.arch,
        }


class Pressure(NamedTuple):
    memory: bool
    disk: bool
    pids: bool


def pressure(data_dir: Path) -> Pressure:
    memory = meminfo().get("MemAvailable")
    try:
        stat = os.statvfs(data_dir if data_dir.exists() else "/")
        disk = stat.f_blocks > 0 and stat.f_bavail / stat.f_blocks < 0.10
    except OSError:
        disk = False
    pids = False
    loadavg = _read("/proc/loadavg").split()
    pid_max = _read("/proc/sys/kernel/pid_max")
    if len(loadavg) >= 4 and "/" in loadavg[3] and pid_max.isdigit():
        running = int(loadavg[3].split("/")[1])
        pids = running > 0.95 * int(pid_max)
    return Pressure(memory is not None and memory < EVICTION_MEMORY, disk, pids)
