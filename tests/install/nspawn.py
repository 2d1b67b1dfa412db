"""Debian system trees booted under ``systemd-nspawn``: a real systemd for the installer's tests.

The tree is built once by ``mmdebstrap`` (Debian 13, minbase, systemd, the board's Python
packages and Docker from Debian) and cached under ``$K3PY_CACHE_DIR/nspawn/<key of the package
list>`` (default ``/var/cache/k3py``). Each machine boots it with ``--volatile=overlay``, so the
cached tree is never written, inside a network namespace the test made; commands run in the
machine's namespaces through ``nsenter``.

Docker runs inside the machines as on a host that keeps its OS: the machine gets a cgroup v2
hierarchy of its own (``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``; on a host whose controllers are
bound to cgroup v1 it has no controllers, so containers run without resource limits), all
capabilities and the system calls runc needs (``keyctl``, ``bpf``), a writable
``/proc/sys/net`` (``SYSTEMD_NSPAWN_API_VFS_WRITABLE=network``: Docker and k3py set their
interfaces' sysctls) and ``/var/lib/docker`` on a tmpfs, because overlayfs cannot stack its
upper directory on the machine's own overlay root (``/var/lib/containerd`` too: the engine's
state, like its images, is not the installer's to compare). Docker's iptables rules live in
the machine's network namespace, never the host's. Without these, on a host with cgroup v1
controllers: nspawn mounts the v1 hierarchies read-only (runc cannot make a container's
cgroup), Docker cannot set a container interface's ``disable_ipv6`` (``/proc/sys`` read-only),
and overlay2 on the overlay root fails.

:func:`distribution_point` is a static HTTP server in a namespace of its own, linked to one
machine only: the fleet's internal mirror the first server installs from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-aiohttp", "python3-cryptography",
    "python3-yaml", "python3-docker", "python3-dnslib", "python3-pyroute2",
    "python3-prometheus-client", "curl", "ca-certificates", "iproute2", "nftables", "procps",
    "docker.io", "docker-cli", "iptables",
)  # fmt: skip
DEFAULT_CACHE = "/var/cache/k3py"
# Docker inside the machine: a cgroup v2 tree of its own and a writable /proc/sys/net.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
MIRROR_NET = ("198.51.100.1", "198.51.100.2")  # the distribution point, its machine's eth1


def cache_dir() -> Path:
    return Path(os.environ.get("K3PY_CACHE_DIR", DEFAULT_CACHE))


def tree() -> Path:
    """The cached Debian tree, built when missing (about 3 minutes on a loaded 2-core host)."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(sorted(PACKAGES))}".encode()).hexdigest()
    slot = cache_dir() / "nspawn" / key[:24]
    root = slot / "root"
    if root.is_dir():
        return root
    slot.mkdir(parents=True, exist_ok=True)
    partial = slot / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE,
            str(partial), MIRROR]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    # mmdebstrap copies the build host's name; each machine takes the one nspawn gives it.
    (partial / "etc" / "hostname").unlink(missing_ok=True)
    partial.rename(root)
    return root


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@dataclass
class Machine:
    name: str
    netns: str
    process: subprocess.Popen[bytes]
    leader: int = 0

    def run(
        self, script: str, *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``sh -c script`` inside the machine (its mount, PID, UTS, IPC and network)."""
        argv = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p",
                "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                "HOME=/root", "sh", "-c", script]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            journal = self.run("journalctl --no-pager -n 30 -o cat -u 'k3py*'", check=False)
            raise AssertionError(
                f"{self.name}: {script!r} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{journal.stdout}"
            )
        return result

    def in_netns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def files(self) -> set[str]:
        """The machine's files, without what systemd and Python write anyway (journal, caches)."""
        out = self.run(
            "find / -xdev \\( -path /var/log/journal -o -name __pycache__ -o -path /var/lib/systemd"
            " -o -path /var/cache \\) -prune -o -print"
        ).stdout
        return set(out.split())


def _leader(nspawn: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        children = Path(f"/proc/{nspawn}/task/{nspawn}/children")
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        time.sleep(0.2)
    raise AssertionError("systemd-nspawn started no container")


@contextlib.contextmanager
def machines(
    root: Path, names: tuple[str, str], address: tuple[str, str], bind: Path
) -> Iterator[tuple[Machine, Machine]]:
    """Two booted machines joined by one veth pair (``eth0`` in each), ``bind`` at /mnt/k3py."""
    tag = str(os.getpid())
    netns = [f"k3pyinst-{n}-{tag}" for n in ("a", "b")]
    started: list[Machine] = []
    try:
        for ns in netns:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"k3pyi{tag}a", "type", "veth", "peer", "name", f"k3pyi{tag}b")
        for ns, end, addr in zip(netns, "ab", address, strict=True):
            sh("ip", "link", "set", f"k3pyi{tag}{end}", "netns", ns)
            sh("ip", "-n", ns, "link", "set", f"k3pyi{tag}{end}", "name", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        for name, ns in zip(names, netns, strict=True):
            argv = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                    "--volatile=overlay", f"--directory={root}", f"--machine={name}",
                    f"--hostname={name}", f"--network-namespace-path=/run/netns/{ns}",
                    "--capability=all", "--system-call-filter=add_key keyctl bpf",
                    "--tmpfs=/var/lib/docker", "--tmpfs=/var/lib/containerd",
                    f"--bind-ro={bind}:/mnt/k3py"]  # fmt: skip
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, **NSPAWN_ENV},
            )
            machine = Machine(name, ns, process)
            started.append(machine)
            machine.leader = _leader(process.pid, time.monotonic() + 30)
        deadline = time.monotonic() + 90
        for machine in started:
            while True:
                state = machine.run("systemctl is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    break
                assert time.monotonic() < deadline, f"{machine.name} did not boot: {state}"
                time.sleep(0.5)
        yield started[0], started[1]
    finally:
        for machine in started:
            with contextlib.suppress(ProcessLookupError):
                machine.process.send_signal(signal.SIGTERM)
        for machine in started:
            try:
                machine.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                machine.process.kill()
                machine.process.wait()
        for ns in netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@contextlib.contextmanager
def distribution_point(machine: Machine, directory: Path) -> Iterator[str]:
    """``directory`` served over HTTP from a namespace linked to ``machine`` only; its URL.

    The machine reaches it on ``eth1``; nothing else does (the host has no address on the link).
    """
    ns = f"k3pyinst-m-{os.getpid()}"
    host_end = f"k3pyi{os.getpid()}m"
    server: subprocess.Popen[bytes] | None = None
    url = f"http://{MIRROR_NET[0]}:8080"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", f"{host_end}x")
        sh("ip", "link", "set", host_end, "netns", ns)
        sh("ip", "link", "set", f"{host_end}x", "netns", machine.netns)
        sh("ip", "-n", machine.netns, "link", "set", f"{host_end}x", "name", "eth1")
        sh("ip", "-n", ns, "addr", "add", f"{MIRROR_NET[0]}/24", "dev", host_end)
        sh("ip", "-n", machine.netns, "addr", "add", f"{MIRROR_NET[1]}/24", "dev", "eth1")
        sh("ip", "-n", ns, "link", "set", host_end, "up")
        sh("ip", "-n", machine.netns, "link", "set", "eth1", "up")
        argv = ["ip", "netns", "exec", ns, "python3", "-m", "http.server", "8080",
                "--bind", MIRROR_NET[0], "--directory", str(directory)]  # fmt: skip
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while machine.run(f"curl -sf -o /dev/null {url}/", check=False).returncode != 0:
            assert time.monotonic() < deadline, "the distribution point does not answer"
            time.sleep(0.3)
        yield url
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
