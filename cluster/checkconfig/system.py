"""The running system as the checker sees it, and the checks only a running system can answer.

:class:`HostSystem` is the checker's window on a machine: files under ``/proc`` and ``/sys``,
commands on ``PATH`` and the kernel's release. :class:`LiveSystem` reads the real machine,
:class:`FakeSystem` serves tests. On top of it sit the running-system checks: the cgroup hierarchy
(v1, hybrid or v2) and its cpu, cpuset and pids controllers, whether the memory cgroup is really
enabled (Raspberry Pi kernels disable it unless ``cgroup_enable=memory cgroup_memory=1`` is on the
command line), iptables/nft and iptables' mode, AppArmor's parser, swap, routes that overlap the
cluster's default CIDRs, and the root key quota.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from k3py.cluster.checkconfig.modules import find_modules_dir
from k3py.cluster.checkconfig.report import Finding, State

CLUSTER_CIDRS = (ipaddress.IPv4Network("10.42.0.0/16"), ipaddress.IPv4Network("10.43.0.0/16"))
# Interfaces k3py itself creates: their routes into the cluster CIDRs are expected.
OWN_INTERFACES = ("cni0", "flannel.1", "kube-ipvs0")
CONTROLLERS = ("cpu", "cpuset", "pids")
MEMORY_CMDLINE = "cgroup_enable=memory cgroup_memory=1"
MIN_ROOT_MAXKEYS = 10000


def config_candidates(release: str) -> tuple[str, ...]:
    """Where a running kernel's config is looked for, in order."""
    return (
        "/proc/config.gz",
        f"/boot/config-{release}",
        f"/usr/src/linux-{release}/.config",
        "/usr/src/linux/.config",
    )


class HostSystem(Protocol):
    def kernel_release(self) -> str: ...

    def read_bytes(self, path: str) -> bytes | None:
        """The file's contents, or None if it does not exist or cannot be read."""
        ...

    def which(self, command: str) -> str | None: ...

    def run(self, argv: Sequence[str]) -> str | None:
        """The command's standard output, or None if it could not run or failed."""
        ...

    def modules_dir(self, release: str) -> Path | None: ...


class LiveSystem:
    """The machine this process runs on."""

    def kernel_release(self) -> str:
        return os.uname().release

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    def which(self, command: str) -> str | None:
        # iptables and nft live in /usr/sbin, which is not on every user's PATH.
        search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        return shutil.which(command, path=search)

    def run(self, argv: Sequence[str]) -> str | None:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    def modules_dir(self, release: str) -> Path | None:
        return find_modules_dir(Path("/"), release)


@dataclass(frozen=True)
class FakeSystem:
    """A machine described by its files and command outputs, for tests."""

    release: str = "6.12.0-test"
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    commands: Mapping[str, str] = field(default_factory=dict)  # "iptables --version" -> output
    modules: Path | None = None

    def kernel_release(self) -> str:
        return self.release

    def read_bytes(self, path: str) -> bytes | None:
        value = self.files.get(path)
        return value.encode() if isinstance(value, str) else value

    def which(self, command: str) -> str | None:
        known = {argv.split()[0] for argv in self.commands}
        return f"/usr/sbin/{command}" if command in known else None

    def run(self, argv: Sequence[str]) -> str | None:
        return self.commands.get(" ".join([Path(argv[0]).name, *argv[1:]]))

    def modules_dir(self, release: str) -> Path | None:
        return self.modules


def _text(system: HostSystem, path: str) -> str | None:
    data = system.read_bytes(path)
    return None if data is None else data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _Cgroups:
    variant: str  # "v2", "v1", "v1 (hybrid)" or "none"
    controllers: frozenset[str]
    memory_enabled: bool


def _cgroups(system: HostSystem) -> _Cgroups:
    mounts = [line.split() for line in (_text(system, "/proc/mounts") or "").splitlines()]
    mounts = [m for m in mounts if len(m) >= 4]
    if any(m[1] == "/sys/fs/cgroup" and m[2] == "cgroup2" for m in mounts):
        listed = (_text(system, "/sys/fs/cgroup/cgroup.controllers") or "").split()
        return _Cgroups("v2", frozenset(listed), "memory" in listed)
    v1_mounted = {opt for m in mounts if m[2] == "cgroup" for opt in m[3].split(",")}
    if not v1_mounted:
        return _Cgroups("none", frozenset(), memory_enabled=False)
    enabled = set()
    for line in (_text(system, "/proc/cgroups") or "").splitlines():
        fields = line.split()
        if len(fields) == 4 and not line.startswith("#") and fields[3] == "1":
            enabled.add(fields[0])
    hybrid = any(m[2] == "cgroup2" and m[1] == "/sys/fs/cgroup/unified" for m in mounts)
    usable = frozenset(enabled & v1_mounted)
    return _Cgroups("v1 (hybrid)" if hybrid else "v1", usable, "memory" in usable)


def _cgroup_findings(system: HostSystem) -> list[Finding]:
    cgroups = _cgroups(system)
    if cgroups.variant == "none":
        return [
            Finding(
                "cgroup hierarchy",
                State.MISSING,
                "no cgroup filesystem is mounted at /sys/fs/cgroup",
                "mount it (mount -t cgroup2 none /sys/fs/cgroup) or boot with an init that does",
            )
        ]
    findings = [Finding("cgroup hierarchy", State.OK, cgroups.variant)]
    absent = [c for c in CONTROLLERS if c not in cgroups.controllers]
    if absent:
        findings.append(
            Finding(
                "cgroup controllers",
                State.MISSING,
                f"not available: {' '.join(absent)}",
                "enable them in the kernel (see the cgroups group) and do not disable them on the "
                "kernel command line (cgroup_disable=…)",
            )
        )
    else:
        findings.append(Finding("cgroup controllers", State.OK, " ".join(CONTROLLERS)))
    if cgroups.memory_enabled:
        findings.append(Finding("memory cgroup", State.OK, "enabled"))
    else:
        cmdline = _text(system, "/proc/cmdline") or ""
        why = (
            "disabled by cgroup_disable=memory on the kernel command line"
            if "cgroup_disable=memory" in cmdline.split()
            else "not enabled in the running kernel"
        )
        findings.append(
            Finding(
                "memory cgroup",
                State.MISSING,
                why,
                f"add '{MEMORY_CMDLINE}' to the kernel command line (on a Raspberry Pi: the "
                "single line of cmdline.txt on the boot partition) and reboot",
            )
        )
    return findings


_IPTABLES_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)(?:\s+\((\w+)\))?")


def _firewall_finding(system: HostSystem) -> Finding:
    parts = []
    failure = ""
    if (iptables := system.which("iptables")) is not None:
        output = (system.run([iptables, "--version"]) or "").strip()
        match = _IPTABLES_VERSION.search(output)
        if match is None:
            parts.append(f"iptables (unknown version: {output or 'no output'})")
        else:
            version = tuple(int(x) for x in match.group(1, 2, 3))
            mode = match.group(4) or "legacy"
            parts.append(f"iptables v{'.'.join(map(str, version))} ({mode} mode)")
            if mode == "nf_tables" and (1, 8, 0) <= version < (1, 8, 4):
                failure = "iptables 1.8.0-1.8.3 in nf_tables mode mishandles Service rules"
    if (nft := system.which("nft")) is not None:
        output = (system.run([nft, "--version"]) or "").strip()
        parts.append(output.split(" (")[0] if output else "nft (unknown version)")
    if failure:
        return Finding(
            "iptables/nft",
            State.MISSING,
            f"{'; '.join(parts)}: {failure}",
            "install iptables 1.8.4 or later, or switch to legacy mode "
            "(update-alternatives --set iptables /usr/sbin/iptables-legacy)",
        )
    if not parts:
        return Finding(
            "iptables/nft",
            State.WARNING,
            "neither iptables nor nft is installed",
            "install iptables (Debian: apt-get install iptables); Service and egress rules need it",
        )
    return Finding("iptables/nft", State.OK, "; ".join(parts))


def _apparmor_findings(system: HostSystem) -> list[Finding]:
    if (_text(system, "/sys/module/apparmor/parameters/enabled") or "").strip() != "Y":
        return []
    if system.which("apparmor_parser"):
        return [Finding("apparmor", State.OK, "enabled, apparmor_parser installed")]
    return [
        Finding(
            "apparmor",
            State.MISSING,
            "enabled, but apparmor_parser is missing (containers cannot get their profile)",
            "install it (Debian: apt-get install apparmor)",
        )
    ]


def _swap_finding(system: HostSystem) -> Finding:
    lines = (_text(system, "/proc/swaps") or "").splitlines()[1:]
    devices = [line.split() for line in lines if line.strip()]
    if not devices:
        return Finding("swap", State.OK, "off")
    total_kib = sum(int(d[2]) for d in devices if len(d) > 2 and d[2].isdigit())
    names = ", ".join(d[0] for d in devices)
    return Finding(
        "swap",
        State.WARNING,
        f"on: {names} ({total_kib // 1024} MiB)",
        "pod memory limits assume no swap: swapoff -a, and remove swap from /etc/fstab",
    )


def _routes(system: HostSystem) -> list[tuple[str, ipaddress.IPv4Network]]:
    routes = []
    for line in (_text(system, "/proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            address = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
            mask = bin(int.from_bytes(bytes.fromhex(fields[7])[::-1], "big")).count("1")
            routes.append((fields[0], ipaddress.IPv4Network((address, mask), strict=False)))
        except ValueError:
            continue
    return routes


def _routes_finding(system: HostSystem) -> Finding:
    clashes = [
        f"{network} dev {interface} overlaps {cidr}"
        for interface, network in _routes(system)
        if network.prefixlen > 0 and interface not in OWN_INTERFACES
        for cidr in CLUSTER_CIDRS
        if network.overlaps(cidr)
    ]
    if not clashes:
        return Finding("routes", State.OK, "none overlap 10.42.0.0/16 or 10.43.0.0/16")
    return Finding(
        "routes",
        State.WARNING,
        "; ".join(clashes),
        "pods or Services would be unreachable from this network: pick other ranges with "
        "the server's --cluster-cidr/--service-cidr, or renumber the network",
    )


def _keys_findings(system: HostSystem) -> list[Finding]:
    raw = (_text(system, "/proc/sys/kernel/keys/root_maxkeys") or "").strip()
    if not raw.isdigit():
        return []
    if int(raw) > MIN_ROOT_MAXKEYS:
        return [Finding("root_maxkeys", State.OK, raw)]
    return [
        Finding(
            "root_maxkeys",
            State.WARNING,
            f"{raw}: each container takes a key, so this caps the containers root can run",
            "sysctl -w kernel.keys.root_maxkeys=1000000 (and persist it in /etc/sysctl.d)",
        )
    ]


def running_system_findings(system: HostSystem) -> tuple[Finding, ...]:
    """Everything checked on the live system, beyond the kernel's config."""
    return (
        *_cgroup_findings(system),
        _firewall_finding(system),
        *_apparmor_findings(system),
        _swap_finding(system),
        _routes_finding(system),
        *_keys_findings(system),
    )
