"""The node's CPU, memory, disk and network, read from ``/proc`` and ``statvfs``.

Names follow the Prometheus node exporter (``node_cpu_seconds_total{cpu,mode}``,
``node_memory_MemAvailable_bytes``, ``node_filesystem_avail_bytes{mountpoint}``,
``node_network_receive_bytes_total{device}``…) so its dashboards read them; a board does not
need to run a node exporter beside the agent. Everything is read at scrape time: nothing is
kept between scrapes. The same readings give :mod:`.usage` the node's CPU time and working set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from k3py.cluster.api.metricseries import gauge_family, labelled_counter, labelled_gauge

PROC = Path("/proc")
_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_MEMINFO = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree")


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_times(proc: Path = PROC) -> dict[str, list[int]]:
    """``/proc/stat``'s cpu lines: ``cpu`` (all) and ``cpu0``… → ticks per mode."""
    times: dict[str, list[int]] = {}
    for line in (proc / "stat").read_text().splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        times[name] = [int(v) for v in values[: len(_CPU_MODES)]]
    return times


def busy_seconds(proc: Path = PROC) -> float:
    """CPU time spent on anything but idle and iowait since boot, all CPUs together."""
    ticks = cpu_times(proc).get("cpu", [])
    idle = sum(ticks[3:5])
    return (sum(ticks) - idle) / clock_ticks()


def meminfo(proc: Path = PROC) -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    found: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            found[key] = int(parts[0]) * (1024 if parts[-1] == "kB" else 1)
    return found


def working_set(proc: Path = PROC) -> int:
    """Memory in use that the kernel cannot simply drop (total less available)."""
    info = meminfo(proc)
    return max(0, info.get("MemTotal", 0) - info.get("MemAvailable", info.get("MemFree", 0)))


def network_bytes(proc: Path = PROC) -> dict[str, tuple[int, int]]:
    """Received and transmitted bytes per interface (``/proc/net/dev``)."""
    found: dict[str, tuple[int, int]] = {}
    for line in (proc / "net" / "dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 9:
            found[name.strip()] = (int(fields[0]), int(fields[8]))
    return found


def node_families(data_dir: Path, proc: Path = PROC) -> Iterable[Any]:
    """The node exporter's core families for this node, at scrape time."""
    yield from _cpu(proc)
    yield from _memory(proc)
    yield from _filesystem(data_dir)
    yield from _network(proc)
    with contextlib.suppress(OSError, ValueError):
        loads = (proc / "loadavg").read_text().split()[:3]
        for name, value in zip(("node_load1", "node_load5", "node_load15"), loads, strict=True):
            yield gauge_family(name, f"{name[9:]}m load average.", float(value))


def _cpu(proc: Path) -> Iterator[Any]:
    with contextlib.suppress(OSError, ValueError):
        family = labelled_counter(
            "node_cpu_seconds", "Seconds the CPUs spent in each mode.", ("cpu", "mode")
        )
        tick = clock_ticks()
        for name, ticks in cpu_times(proc).items():
            if name == "cpu":
                continue
            for mode, value in zip(_CPU_MODES, ticks, strict=False):
                family.add_metric((name[3:], mode), value / tick)
        yield family


def _memory(proc: Path) -> Iterator[Any]:
    with contextlib.suppress(OSError, ValueError):
        info = meminfo(proc)
        for key in _MEMINFO:
            if key in info:
                yield gauge_family(
                    f"node_memory_{key}_bytes", f"Memory information field {key}_bytes.", info[key]
                )


def _filesystem(data_dir: Path) -> Iterator[Any]:
    with contextlib.suppress(OSError):
        path = data_dir if data_dir.exists() else Path("/")
        stat = os.statvfs(path)
        size = labelled_gauge(
            "node_filesystem_size_bytes", "Filesystem size in bytes.", ("mountpoint",)
        )
        size.add_metric((str(path),), stat.f_blocks * stat.f_frsize)
        avail = labelled_gauge(
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
            ("mountpoint",),
        )
        avail.add_metric((str(path),), stat.f_bavail * stat.f_frsize)
        yield size
        yield avail


def _network(proc: Path) -> Iterator[Any]:
    with contextlib.suppress(OSError, ValueError):
        received = labelled_counter(
            "node_network_receive_bytes", "Network device statistic receive_bytes.", ("device",)
        )
        sent = labelled_counter(
            "node_network_transmit_bytes", "Network device statistic transmit_bytes.", ("device",)
        )
        for device, (rx, tx) in network_bytes(proc).items():
            received.add_metric((device,), rx)
            sent.add_metric((device,), tx)
        yield received
        yield sent
