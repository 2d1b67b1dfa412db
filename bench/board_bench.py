"""Board benchmark: the cluster of ``make qemu-cluster`` measured inside its emulated boards.

Boots the emulated cluster (:mod:`qemu_cluster`: one ARM64 server board that runs workloads
through its own agent, one ARM64 and one ARMv7 agent board, TCG, the images' own Python 3.13),
lets it join and run its DaemonSet, then reads inside every board, from ``/proc``: the resident
memory (VmRSS) of each k3py process (the server, the server board's agent child, the agents)
and its CPU use over an idle minute; boot to node Ready per board (since its QEMU started),
the median of ``BOOT_ROUNDS`` boots of the whole cluster on fresh cards (the slowest beside it);
and, as the profile of a service's start, the slowest imports of the agent's entry module
(``python3 -X importtime``) and whether the installed firmware's bytecode is up to date. The
same server and agent figures are taken on this host beside them (``k3py server`` and one
``k3py agent`` on the Docker engine, as :mod:`bench.agent_bench` runs them), so each board
figure has its x86 counterpart.

It is the ``qemu`` tier of ``make bench``: skipped when ``qemu-system-aarch64``/``-arm`` are
missing. Images are reused from ``out/qemu-cluster/images`` when fresh (else built, as ``make
qemu-cluster`` does); ``K3PY_BOARD_IMAGES=<dir>`` names a folder of ready images instead.
Figures under TCG on a shared machine are noisy: the load average is recorded beside them.
``python -m bench.board_bench`` prints JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import main

if TYPE_CHECKING:
    from collections.abc import Callable

    from qemu_cluster import ClusterReport, ClusterSettings, NodeSpec, SegmentBoard
    from qemu_kubectl import ReadyWatch

REPO = Path(__file__).resolve().parent.parent
SERVER_RSS_BUDGET_MB = 60
AGENT_RSS_BUDGET_MB = 45
BOOT_BUDGET_S = {"arm64": 20.0, "armv7": 30.0}
IDLE_SECONDS = 60.0
READY_TIMEOUT_S = 300.0
# Boots of the whole cluster on fresh cards; each node's boot to Ready is their median.
BOOT_ROUNDS = 5
SETTLE_SECONDS = 20.0

# Every k3py process of the board: pid, VmRSS (kB), utime+stime and start (ticks since boot),
# the command line.
_PROCESSES = (
    "for p in /proc/[0-9]*; do"
    ' c=$(tr "\\0" " " < $p/cmdline 2>/dev/null);'
    ' case "$c" in *python*k3py*|*dockerd*)'
    " echo \"K3PYPROC|${p#/proc/}|$(awk '/^VmRSS/{print $2}' $p/status)"
    "|$(awk '{print $14+$15, $22}' $p/stat)|$c\";; esac; done"
)
# The board's clock against its uptime, and the service log's milestones of the start.
_MILESTONES = (
    "echo \"K3PYUP|$(cut -d' ' -f1 /proc/uptime)|$(date +%s)\";"
    " grep -E 'msg=\"?(k3py server is ready|joined the cluster|waiting for the container"
    " runtime|node registered|loaded air-gap images|k3py agent is running)'"
    " /var/log/k3py.log | tail -n 24 | sed 's/^/K3PYLOG|/'"
)
TICKS = 100  # USER_HZ of ARM Linux (/proc/<pid>/stat counts in it)
# The agent's entry module, imported as the service imports it at start.
_IMPORTTIME = (
    "cd / && python3 -X importtime -c 'import k3py.cluster.agent.agent' 2>&1 >/dev/null"
    " | sort -t'|' -k2 -n -r | head -n 12"
)
# Stale or missing bytecode: sources of the installed k3py without a current .pyc beside them.
_BYTECODE = (
    "python3 -I -c 'import importlib.util as u, pathlib, k3py;"
    " root = pathlib.Path(k3py.__file__).parent;"
    ' src = list(root.rglob("*.py"));'
    " missing = [s for s in src if not pathlib.Path(u.cache_from_source(str(s))).exists()];"
    ' print(f"K3PYPYC|{len(src)}|{len(missing)}")\''
)


def _processes(board: SegmentBoard) -> dict[str, dict[str, Any]]:
    """The board's k3py processes by role (``server``, ``agent``), RSS in MB, CPU ticks."""
    result = board.run(_PROCESSES, timeout=120)
    found: dict[str, dict[str, Any]] = {}
    for line in result.output.splitlines():
        if not line.startswith("K3PYPROC|"):
            continue
        _, pid, rss, times, command = line.split("|", 4)
        ticks, start = [*times.split(), "0", "0"][:2]
        words = command.split()
        if words and words[0].endswith("dockerd"):
            found.setdefault("dockerd", {"started_s_after_boot": round(int(start) / TICKS, 1)})
            continue
        if "k3py.cluster.ota.launcher" in words:
            launched = round(int(start) / TICKS, 1)
            found.setdefault("launcher", {"started_s_after_boot": launched})
            continue
        role = next((w for w in words if w in ("server", "agent")), "")
        if not role or not rss.strip():
            continue  # the launcher or a helper, not a service
        entry = {
            "pid": int(pid),
            "rss_mb": round(int(rss) / 1024, 1),
            "ticks": int(ticks),
            "started_s_after_boot": round(int(start) / TICKS, 1),
        }
        # The biggest of a role is the service (a launcher that names the role is smaller).
        if role not in found or entry["rss_mb"] > found[role]["rss_mb"]:
            found[role] = entry
    return found


def _milestones(board: SegmentBoard) -> dict[str, float]:
    """When the service's log says it was ready, joined and registered (seconds after boot)."""
    output = board.run(_MILESTONES, timeout=60).output
    booted_at = None
    found: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("K3PYUP|"):
            _, uptime, now = line.split("|")
            booted_at = float(now) - float(uptime)
        elif line.startswith("K3PYLOG|") and booted_at is not None:
            fields = dict(
                part.split("=", 1) for part in shlex.split(line[len("K3PYLOG|") :]) if "=" in part
            )
            stamp = fields.get("time", "")
            when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
            at = when.replace(tzinfo=datetime.UTC).timestamp() - booted_at
            if at >= 0:  # this boot's (the log keeps earlier boots' lines)
                found.setdefault(fields.get("msg", "?"), round(at, 1))
    return found


def _board_figures(boards: list[SegmentBoard], kubeconfig: Path, out: dict[str, Any]) -> None:
    """Idle RSS and CPU of every board's k3py processes, the import profile and bytecode."""
    time.sleep(SETTLE_SECONDS)
    before = {b.spec.name: _processes(b) for b in boards}
    started = time.monotonic()
    time.sleep(IDLE_SECONDS)
    after = {b.spec.name: _processes(b) for b in boards}
    seconds = time.monotonic() - started
    for board in boards:
        name = board.spec.name
        figures: dict[str, Any] = {"board": board.spec.board}
        for role, now in after[name].items():
            if "rss_mb" not in now:  # dockerd, the launcher: when they started
                figures[role] = now
                continue
            then = before[name].get(role)
            cpu = None
            if then is not None and then["pid"] == now["pid"]:
                cpu = round(100 * (now["ticks"] - then["ticks"]) / TICKS / seconds, 1)
            figures[role] = {
                "rss_mb": now["rss_mb"],
                "cpu_percent": cpu,
                "started_s_after_boot": now["started_s_after_boot"],
            }
        figures["start_milestones_s_after_boot"] = _milestones(board)
        out["boards"][name] = figures
    armv7 = next(b for b in boards if b.spec.board.endswith("armv7"))
    profile = armv7.run(_IMPORTTIME, timeout=300).output
    out["agent_import_profile_armv7"] = [
        " ".join(line.split()) for line in profile.splitlines() if "import time:" in line
    ]
    for board in boards[:1] + [armv7]:
        result = board.run(_BYTECODE, timeout=300)
        for line in result.output.splitlines():
            if line.startswith("K3PYPYC|"):
                _, sources, missing = line.split("|")
                out["bytecode"][board.spec.board] = {
                    "sources": int(sources),
                    "without_current_pyc": int(missing),
                }


_BOOT_MARKS = "dmesg | sed -n 's/^\\[ *\\([0-9.]*\\)\\] k3py-boot: \\(.*\\)/K3PYMARK|\\1|\\2/p'"


def _node(kubeconfig: Path, name: str) -> dict[str, Any]:
    from qemu_kubectl import kubectl

    result = kubectl(kubeconfig, "get", "node", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def _boot_stages(board: SegmentBoard) -> dict[str, float]:
    """The early boot's milestones (kernel log) and the service's (its log), seconds after
    the kernel started."""
    stages = {
        f"boot: {what}": round(float(at), 1)
        for line in board.run(_BOOT_MARKS, timeout=60).output.splitlines()
        if line.startswith("K3PYMARK|")
        for _, at, what in [line.split("|", 2)]
    }
    return {**stages, **_milestones(board)}


def _boot_alone(
    boards: list[SegmentBoard], kubeconfig: Path, images: dict[str, Path], root: Path,
    out: dict[str, Any],
) -> None:  # fmt: skip
    """Each agent board booted again on its own, the rest of the cluster idle, as a board boots
    on its own CPU in the field (the cluster's first boot shares two host cores among three
    emulated boards): its first boot from a fresh card (join, image loading), a reboot, then a
    power cycle. From QEMU's start (or the ``reboot`` typed on the console) to its Node Ready."""
    from qemu_cluster import AGENTS, read_file_on
    from qemu_kubectl import ReadyWatch

    token = read_file_on(boards[0], "/var/lib/k3py/server/token").strip()
    with ReadyWatch(kubeconfig) as watch:
        for spec in AGENTS:
            _boot_one_alone(spec, boards, kubeconfig, watch, images, root, out, token)


def _boot_one_alone(
    spec: NodeSpec, boards: list[SegmentBoard], kubeconfig: Path, watch: ReadyWatch,
    images: dict[str, Path], root: Path, out: dict[str, Any], token: str,
) -> None:  # fmt: skip
    from qemu_cluster import (
        API_PORT,
        SERVER,
        ClusterSettings,
        SegmentBoard,
        node_settings,
        personalise,
    )
    from qemu_kubectl import kubectl

    index = next(i for i, b in enumerate(boards) if b.spec.name == spec.name)
    previous = boards[index]
    previous.power_off()
    kubectl(kubeconfig, "delete", "node", spec.name, check=False)
    workdir = root / "alone" / spec.name
    personalise(images[spec.image_name], workdir / "card.img",
                {"role": "agent", "server": f"https://{SERVER.address}:{API_PORT}",
                 "token": token, **node_settings(spec, ClusterSettings())})  # fmt: skip
    # Written through, not a QEMU snapshot: the card (this board's copy) keeps what a boot wrote.
    board = SegmentBoard(
        spec, workdir / "card.img", workdir, previous.mcast_port, None, snapshot=False
    )
    boards[index] = board
    board.start()
    first = watch.wait(spec.name, board.started_at, READY_TIMEOUT_S)
    board.wait_for_ready()
    figures: dict[str, Any] = {"first_boot_to_ready_s": round(first, 1)}
    figures["first_boot_stages_s"] = _boot_stages(board)

    def again(name: str, restart: Callable[[], float]) -> None:
        """The board started again by ``restart`` (which returns when it began), to Ready."""
        node_info = (_node(kubeconfig, spec.name).get("status") or {}).get("nodeInfo", {})
        since = restart()
        figures[f"{name}_to_ready_s"] = round(
            watch.wait(spec.name, since, READY_TIMEOUT_S, node_info.get("bootID", "")), 1
        )
        board.wait_for_ready()
        figures[f"{name}_stages_s"] = _boot_stages(board)

    def reboot() -> float:
        typed = time.monotonic()
        board.child.sendline("reboot")
        return typed

    def power_cycle() -> float:
        board.power_off()
        board.start()
        return board.started_at

    again("reboot", reboot)
    # A board powered off and on: QEMU ends and starts again on the same card. A reboot typed
    # on the console resets the machine inside the same QEMU, which does not start as a cold
    # board does: on the ARMv7 board its services spend about twice the kernel time of a cold
    # start from the same card (containerd 2.1 s against 0.9 s, dockerd 3.4 s against 2.1 s).
    again("power_cycle", power_cycle)
    out["alone"][spec.name] = figures


def _boot_rounds(
    boards: list[SegmentBoard], settings: ClusterSettings, images: dict[str, Path], root: Path,
    out: dict[str, Any],
) -> None:  # fmt: skip
    """The cluster's boot again, ``BOOT_ROUNDS - 1`` times, as the first was: fresh cards for the
    three boards, the server first, the agents once its own agent runs. The first boot's boards
    are powered off first; each round's boards are powered off before the next."""
    from qemu_cluster import ClusterReport, boot_cluster
    from qemu_driver import free_port

    for board in reversed(boards):
        board.power_off()
    for number in range(2, BOOT_ROUNDS + 1):
        workdir = root / f"round-{number}"
        report = ClusterReport()
        round_boards: list[SegmentBoard] = []
        try:
            boot_cluster(
                dataclasses.replace(settings, out_dir=workdir), images, round_boards, report,
                workdir / "kubeconfig", (random.randint(20000, 60000), free_port()),
            )  # fmt: skip
        finally:
            for board in reversed(round_boards):
                board.power_off()
        for name, seconds in _ready_timings(report).items():
            out["boot_rounds_s"].setdefault(name, []).append(round(seconds, 1))
        shutil.rmtree(workdir, ignore_errors=True)


def _ready_timings(report: ClusterReport) -> dict[str, float]:
    return {
        name.removesuffix(" boot to Ready"): seconds
        for name, seconds in report.timings.items()
        if name.endswith(" boot to Ready")
    }


def _boards(root: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "qemu-tests"))
    from qemu_cluster import ClusterReport, ClusterSettings, run_cluster

    out: dict[str, Any] = {"boards": {}, "bytecode": {}, "alone": {}, "boot_rounds_s": {}}
    images = os.environ.get("K3PY_BOARD_IMAGES")
    prebuilt: tuple[tuple[str, Path], ...] = ()
    if images:
        prebuilt = tuple(
            (p.name.removesuffix(".img"), p) for p in sorted(Path(images).glob("*.img"))
        )
    images_dir = REPO / "out" / "qemu-cluster" / "images"

    def while_up(boards: list[SegmentBoard], kubeconfig: Path) -> None:
        _board_figures(boards, kubeconfig, out)
        built = dict(prebuilt) or {
            b.spec.image_name: images_dir / f"{b.spec.image_name}.img" for b in boards
        }
        _boot_alone(boards, kubeconfig, built, root, out)
        _boot_rounds(boards, settings, built, root, out)

    settings = ClusterSettings(
        out_dir=root / "qemu-cluster", images_dir=images_dir, prebuilt=prebuilt, while_up=while_up
    )
    report = ClusterReport()
    run_cluster(settings, report)
    out["timings_s"] = {k: round(v, 1) for k, v in report.timings.items()}
    # The first boot's figure first; the median of the rounds is the figure (one boot's time
    # moves by a few seconds from run to run with the host).
    for name, seconds in _ready_timings(report).items():
        out["boot_rounds_s"].setdefault(name, []).insert(0, round(seconds, 1))
    out["boot_to_ready_s"] = {
        name: round(statistics.median(samples), 1) for name, samples in out["boot_rounds_s"].items()
    }
    return out


def _host() -> dict[str, Any]:
    """The same figures on this host: a server and one agent on Docker, idle."""
    from bench.agent_bench import Bench, _cpu_seconds, _status, run_on_docker
    from k3py.cluster.api.status import ApiError
    from k3py.cluster.client import KubeClient
    from k3py.cluster.server.controllers.base import NODES

    async def measure(bench: Bench) -> dict[str, Any]:
        client = KubeClient.from_kubeconfig(bench.kubeconfig)
        started = time.monotonic()
        try:
            while True:
                try:
                    node = await client.get(NODES, bench.node)
                except ApiError:  # not registered yet
                    node = {}
                ready = [
                    c
                    for c in (node.get("status") or {}).get("conditions") or []
                    if c.get("type") == "Ready" and c.get("status") == "True"
                ]
                if ready:
                    break
                if time.monotonic() - started > 120:
                    raise TimeoutError("the host's agent did not become Ready in 120 s")
                await asyncio.sleep(0.2)
        finally:
            await client.close()
        ready_s = time.monotonic() - started
        await asyncio.sleep(SETTLE_SECONDS)
        assert bench.agent is not None
        pids = {"server": bench.processes[0].pid, "agent": bench.agent.pid}
        before = {role: _cpu_seconds(pid) for role, pid in pids.items()}
        await asyncio.sleep(IDLE_SECONDS)
        figures: dict[str, Any] = {"agent_start_to_ready_s": round(ready_s, 1)}
        for role, pid in pids.items():
            figures[role] = {
                "rss_mb": round(_status(pid)["VmRSS"] / 1024, 1),
                "cpu_percent": round(100 * (_cpu_seconds(pid) - before[role]) / IDLE_SECONDS, 1),
            }
        return figures

    return run_on_docker("board-host", Bench, measure)


def run(*, quick: bool = False, directory: Path | None = None) -> dict[str, Any]:
    """Boot the emulated cluster and measure it; the host's figures beside it."""
    if not (shutil.which("qemu-system-aarch64") and shutil.which("qemu-system-arm")):
        return {"skipped": "qemu-system-aarch64/qemu-system-arm missing (the qemu tier)"}
    results: dict[str, Any] = {"benchmark": "board", "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="k3py-board-bench-", dir=directory) as tmp:
        results.update(_boards(Path(tmp)))
    results["load_average_after_boards"] = os.getloadavg()
    results["host"] = _host()
    results["load_average_after"] = os.getloadavg()
    boards, host = results["boards"], results["host"]
    server = boards.get("server", {})
    summary: dict[str, Any] = {}
    budget: dict[str, Any] = {}

    def figure(key: str, value: Any, limit: float | None = None) -> None:
        if value is None:
            return
        summary[key] = value
        if limit is not None:
            budget[key] = {"budget": limit, "met": value <= limit}

    figure("server_idle_rss_mb_arm64", server.get("server", {}).get("rss_mb"), SERVER_RSS_BUDGET_MB)
    figure("server_idle_cpu_percent_arm64", server.get("server", {}).get("cpu_percent"))
    for name, arch in (("agent-arm64", "arm64"), ("agent-armv7", "armv7")):
        agent = boards.get(name, {}).get("agent", {})
        figure(f"agent_idle_rss_mb_{arch}", agent.get("rss_mb"), AGENT_RSS_BUDGET_MB)
        figure(f"agent_idle_cpu_percent_{arch}", agent.get("cpu_percent"))
        ready = results["boot_to_ready_s"].get(name)
        figure(f"boot_to_ready_s_{arch}", ready, BOOT_BUDGET_S[arch])
        samples = results["boot_rounds_s"].get(name)
        figure(f"boot_to_ready_slowest_round_s_{arch}", max(samples) if samples else None)
    figure("server_board_boot_to_ready_s_arm64", results["boot_to_ready_s"].get("server"))
    for name, arch in (("agent-arm64", "arm64"), ("agent-armv7", "armv7")):
        alone = results.get("alone", {}).get(name, {})
        figure(f"first_boot_to_ready_alone_s_{arch}", alone.get("first_boot_to_ready_s"))
        figure(f"reboot_to_ready_alone_s_{arch}", alone.get("reboot_to_ready_s"))
        figure(f"power_cycle_to_ready_alone_s_{arch}", alone.get("power_cycle_to_ready_s"))
    if "skipped" not in host:
        figure("host_server_idle_rss_mb", host["server"]["rss_mb"])
        figure("host_server_idle_cpu_percent", host["server"]["cpu_percent"])
        figure("host_agent_idle_rss_mb", host["agent"]["rss_mb"])
        figure("host_agent_idle_cpu_percent", host["agent"]["cpu_percent"])
        figure("host_agent_start_to_ready_s", host["agent_start_to_ready_s"])
    summary["load_average_1m_before"] = round(results["load_average_before"][0], 1)
    results["summary"] = summary
    results["budget"] = budget
    return results


if __name__ == "__main__":
    main(run, __doc__)
