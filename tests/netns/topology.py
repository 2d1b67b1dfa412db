"""Hosts on a LAN inside one machine: network namespaces joined by a bridge, for the netns tier.

A :class:`Topology` is what the pod-network, service and DNS tests run clusters on. It creates
one network namespace per host (``<prefix>-h1`` … ``-hN``), one for the LAN (``<prefix>-lan``,
holding the bridge ``br0`` that stands for the switch) and one for the "outside world"
(``<prefix>-out``, the destination of masquerade or DNS-forwarding tests). Every host and the
outside namespace get an interface ``eth0`` on the LAN, with addresses from a documentation
range (``192.0.2.0/24`` by default: host *i* is ``.10+i``, the outside namespace ``.254``) and
``lo`` up. Nothing is created in the machine's own namespace: the veth pairs are made directly in
the namespaces they belong to, so a mistake cannot route cluster addresses off the machine.

API (all names are unique per topology, so parallel runs do not meet)::

    with Topology(hosts=3) as topo:           # or topo.create() … topo.destroy() in a finally
        h1 = topo.hosts[0]                    # Host: .name "h1", .netns, .address, .iface
        h1.run("ip", "-j", "route")           # a command inside the host's namespace
        proc = h1.popen(argv, log_path)       # a long-running process there (stopped by destroy)
        h1.link_stats("flannel.1")            # {"rx_bytes": …, "tx_bytes": …, …} or None
        topo.outside.run("ip", "addr")        # the outside world, also on the LAN
        assert_host_namespace_clean()         # the machine's own routes avoid 10.42/10.43

``destroy`` stops the processes started through :meth:`Host.popen` (SIGTERM, then SIGKILL),
kills anything still running inside the namespaces (all of it was started by the test), and
deletes the namespaces, which removes every interface in them. :func:`netns_tier` gives a test
module the ``netns`` mark and skips it where namespaces cannot be created (not root, no ``ip``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

CLUSTER_NETWORKS = (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("10.43.0.0/16"))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass
class Host:
    """One namespace on the LAN: a host (or the outside world)."""

    name: str
    netns: str
    address: str
    prefixlen: int
    iface: str = "eth0"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this namespace (``ip netns exec``)."""
        return ["ip", "netns", "exec", self.netns, *command]

    def run(
        self, *command: str, check: bool = True, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*command),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"[{self.name}] {' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(
        self, command: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in this namespace, output appended to ``log``."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.argv(*command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.processes.append(process)
        return process

    def json(self, *command: str) -> Any:
        text = self.run(*command).stdout
        return json.loads(text) if text.strip() else []

    def link_stats(self, iface: str) -> dict[str, int] | None:
        """The interface's counters (``rx_bytes``, ``tx_bytes``, ``rx_packets``, …)."""
        result = self.run("ip", "-j", "-s", "link", "show", "dev", iface, check=False)
        if result.returncode != 0:
            return None
        stats = json.loads(result.stdout)[0]["stats64"]
        return {
            f"{direction}_{key}": int(value)
            for direction in ("rx", "tx")
            for key, value in stats[direction].items()
        }

    def has_link(self, iface: str) -> bool:
        return self.run("ip", "link", "show", "dev", iface, check=False).returncode == 0


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Topology:
    """``hosts`` host namespaces, a LAN bridge and an outside namespace (see the module doc)."""

    def __init__(
        self, hosts: int = 3, *, prefix: str = "k3pynet", lan: str = "192.0.2.0/24", mtu: int = 1500
    ) -> None:
        self.prefix = f"{prefix}-{secrets.token_hex(2)}"
        self.lan = ipaddress.ip_network(lan)
        self.mtu = mtu
        self.lan_netns = f"{self.prefix}-lan"
        base = self.lan.network_address
        self.hosts = [
            Host(f"h{i}", f"{self.prefix}-h{i}", str(base + 10 + i), self.lan.prefixlen)
            for i in range(1, hosts + 1)
        ]
        self.outside = Host("out", f"{self.prefix}-out", str(base + 254), self.lan.prefixlen)
        self._created: list[str] = []

    @property
    def everyone(self) -> list[Host]:
        return [*self.hosts, self.outside]

    def create(self) -> Topology:
        try:
            self._add_netns(self.lan_netns)
            _ip("-n", self.lan_netns, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.lan_netns, "link", "set", "br0", "mtu", str(self.mtu), "up")
            _ip("-n", self.lan_netns, "link", "set", "lo", "up")
            for index, host in enumerate(self.everyone):
                self._add_netns(host.netns)
                port = f"p{index}"
                _ip(
                    "link", "add", host.iface, "netns", host.netns, "mtu", str(self.mtu),
                    "type", "veth", "peer", "name", port, "netns", self.lan_netns,
                    "mtu", str(self.mtu),
                )  # fmt: skip
                _ip("-n", self.lan_netns, "link", "set", port, "master", "br0", "up")
                _ip("-n", host.netns, "link", "set", "lo", "up")
                _ip("-n", host.netns, "link", "set", host.iface, "up")
                _ip(
                    "-n", host.netns, "addr", "add", f"{host.address}/{host.prefixlen}",
                    "dev", host.iface,
                )  # fmt: skip
        except BaseException:
            self.destroy()
            raise
        return self

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)

    def destroy(self) -> None:
        for host in self.everyone:
            for process in host.processes:
                stop(process)
            host.processes.clear()
        for name in reversed(self._created):
            _kill_inside(name)
            _ip("netns", "delete", name, check=False)
        self._created.clear()

    def __enter__(self) -> Topology:
        return self.create()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()


def _kill_inside(netns: str) -> None:
    """Kill what still runs in a namespace this topology created (the tests started it)."""
    for _ in range(50):
        pids = [int(p) for p in _ip("netns", "pids", netns, check=False).stdout.split()]
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def host_routes() -> list[dict[str, Any]]:
    """The machine's own IPv4 routes (all tables)."""
    result = subprocess.run(
        ["ip", "-j", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        check=False,
    )
    return list(json.loads(result.stdout or "[]"))


def assert_host_namespace_clean() -> None:
    """The machine's own namespace has no route into the cluster or service CIDR."""
    for route in host_routes():
        dst = route.get("dst", "")
        if dst in ("", "default") or not dst[0].isdigit():
            continue
        network = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        for cluster in CLUSTER_NETWORKS:
            assert not network.overlaps(cluster), f"the host namespace routes {dst}: {route}"


def netns_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"k3pynet-probe-{secrets.token_hex(3)}"
    if _ip("netns", "add", name, check=False).returncode != 0:
        return False
    _ip("netns", "delete", name, check=False)
    return True


def netns_tier() -> list[pytest.MarkDecorator]:
    """The marks of a test that builds namespaces: skipped where it cannot (not root)."""
    return [
        pytest.mark.netns,
        pytest.mark.skipif(not netns_available(), reason="needs root and ip netns"),
    ]
