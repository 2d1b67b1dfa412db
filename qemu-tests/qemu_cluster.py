"""``make qemu-cluster``: a whole k3py cluster of emulated boards, from images to a workload.

It owns the user's path end to end on QEMU: build (or reuse) the images of the QEMU boards,
personalise one card per board through its ``k3py.yaml`` (as ``k3py flash --config`` would),
boot one server (qemu-virt-arm64, which runs workloads through its own agent, as K3s's server
does) and two agents (qemu-virt-arm64, qemu-virt-armv7) on one virtual network, let the agents
join, run a DaemonSet of the air-gap busybox httpd image through the host's real ``kubectl``,
check the pod network and a Service from a pod on the ARMv7 board (:mod:`qemu_podnet`), print
the cluster's state and those exchanges, and power the boards off.

The network needs no privileges. Every board has a NIC on a shared L2 segment, 192.0.2.0/24 (a
documentation range), carried by UDP multicast on the host's loopback (``-netdev socket,
mcast=…``), with a static address from its ``k3py.yaml``; the server's certificate names its
address (``tls-san``). The server also has a second NIC on QEMU's user network (slirp), whose
``hostfwd`` gives the host's ``kubectl`` the API port; slirp cannot share the segment, as it
answers for every address it sees and resets the agents' connections. The pod network's VXLAN
runs between the boards over that segment; the host's own namespace gets no route to the
cluster's addresses. Every console is logged under ``out/qemu-cluster/nodes/``; every wait is
scaled by ``K3PY_TIMEOUT_FACTOR``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pexpect
import yaml
from qemu_driver import (
    BOOT_PARTITION_OFFSET,
    ConsoleError,
    QemuBoard,
    free_port,
    timeout_factor,
)
from qemu_kubectl import (
    HTTPD_PORT,
    WORKLOAD,
    KubectlError,
    ReadyWatch,
    kubectl,
    nodes,
    pods,
    workload_manifest,
)
from qemu_podnet import Exchange, NetworkCheckError, expose, fetch_from_pod, pod_cidr_problems

from k3py.image.board import load_board

REPO = Path(__file__).resolve().parent.parent
SEGMENT = "192.0.2.0/24"
MCAST_GROUP = "230.0.0.1"
HOST_NIC_ADDRESS = "10.0.2.15"  # the server's second NIC, on QEMU's user network (slirp)
HOST_NIC_MAC = "52:54:00:c0:02:fe"
API_PORT = 6443
SOURCES = ("cluster", "image", "board", "kernel-config", "k3py")


class ClusterError(AssertionError):
    """A stage of the emulated cluster did not finish; the message names the stage and logs."""


# What ends a run with diagnostics and a one-line reason (a board, kubectl or a check failed).
FAILURES = (ClusterError, ConsoleError, KubectlError, NetworkCheckError)


@dataclass(frozen=True)
class NodeSpec:
    """One emulated board of the cluster: what it runs and where it sits on the segment."""

    name: str
    board: str
    role: str
    address: str  # on the shared segment
    mac: str

    @property
    def image_name(self) -> str:
        return f"{self.board}-{self.role}"


SERVER = NodeSpec("server", "qemu-virt-arm64", "server", "192.0.2.10", "52:54:00:c0:02:0a")
AGENTS = (
    NodeSpec("agent-arm64", "qemu-virt-arm64", "agent", "192.0.2.11", "52:54:00:c0:02:0b"),
    NodeSpec("agent-armv7", "qemu-virt-armv7", "agent", "192.0.2.12", "52:54:00:c0:02:0c"),
)
NODES = (SERVER, *AGENTS)  # every board runs workloads


@dataclass(frozen=True)
class ClusterSettings:
    out_dir: Path = REPO / "out" / "qemu-cluster"
    images_dir: Path = REPO / "out" / "qemu-cluster" / "images"
    rebuild: bool = False  # build even when the images are newer than every source file
    reuse: bool = False  # use whatever images exist, however old
    keep_running: bool = False  # for a human: wait for Enter before powering off
    # Images built elsewhere (the test session's, shared with the other tiers), by
    # "<board>-<role>": used as they are.
    prebuilt: tuple[tuple[str, Path], ...] = ()
    # --flannel-backend for every node; empty: the firmware's default (vxlan). With "none" the
    # pods stay on the runtime's bridge and the pod network and service checks are skipped.
    flannel_backend: str = ""
    # Called with the powered-on boards and the host's kubeconfig once the cluster is up and
    # checked, before the boards power off (the board benchmark measures them there).
    while_up: Callable[[list[SegmentBoard], Path], None] | None = None


@dataclass
class ClusterReport:
    """What a run measured (seconds) and saw; the test asserts on it."""

    timings: dict[str, float] = field(default_factory=dict)
    # name → ready, arch, ip, podCIDR
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: list[dict[str, str]] = field(default_factory=list)  # name, phase, node, ip
    nodes_wide: str = ""
    pods_wide: str = ""
    services_wide: str = ""
    exchanges: dict[str, Exchange] = field(default_factory=dict)  # "pod IP", "service DNS"


def shown(path: Path) -> str:
    """A path as short as it can be said: relative to the checkout when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def say(message: str) -> None:
    print(f"qemu-cluster: {message}", flush=True)


@contextmanager
def stage(report: ClusterReport, name: str) -> Iterator[None]:
    say(f"{name} ...")
    started = time.monotonic()
    yield
    report.timings[name] = time.monotonic() - started
    say(f"{name} done in {report.timings[name]:.1f}s")


def wait_for(what: str, check: Callable[[], bool], seconds: float, interval: float = 2) -> None:
    deadline = time.monotonic() + seconds * timeout_factor()
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not happen within {seconds * timeout_factor():.0f}s")
        time.sleep(interval)


# --- images -------------------------------------------------------------------------------


def _newest_source() -> float:
    newest = 0.0
    for top in SOURCES:
        for path in (REPO / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


def ensure_image(spec: NodeSpec, settings: ClusterSettings) -> Path:
    """The image for the node's board and role: reused when newer than every source file,
    else built through ``k3py image build`` (the package cache keeps a rebuild short)."""
    given = dict(settings.prebuilt).get(spec.image_name)
    if given is not None:
        say(f"{spec.image_name}: using {shown(given)}")
        return given
    image = settings.images_dir / f"{spec.image_name}.img"
    fresh = image.exists() and (settings.reuse or image.stat().st_mtime > _newest_source())
    if fresh and not settings.rebuild:
        say(f"{spec.image_name}: reusing {shown(image)}")
        return image
    log = settings.out_dir / f"build-{spec.image_name}.log"
    say(f"{spec.image_name}: building (log: {shown(log)})")
    with log.open("w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "k3py", "image", "build", "--board", spec.board,
             "--role", spec.role, "--out", str(settings.images_dir),
             "--work-dir", str(settings.out_dir / "work" / spec.image_name)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"building {spec.image_name} failed (see {log})")
    return image


def personalise(image: Path, card: Path, settings: dict[str, object]) -> None:
    """A copy of the image with the node's ``k3py.yaml`` on its boot partition."""
    card.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "--sparse=always", str(image), str(card)], check=True)
    config = card.with_name("k3py.yaml")
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    subprocess.run(
        ["mcopy", "-o", "-i", f"{card}@@{BOOT_PARTITION_OFFSET}", str(config), "::k3py.yaml"],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )


def network_settings(spec: NodeSpec) -> dict[str, object]:
    return {
        "mode": "static",
        "interface": "eth0",
        "address": f"{spec.address}/{SEGMENT.split('/')[1]}",
    }


def node_settings(spec: NodeSpec, settings: ClusterSettings) -> dict[str, object]:
    """What every board's k3py.yaml says about its node: its name, its address on the segment
    (the server also has the host NIC, so the node IP is never left to a guess), the interface
    flannel's VXLAN uses, and the backend when the run asks for one."""
    values: dict[str, object] = {
        "hostname": spec.name, "node-name": spec.name, "node-ip": spec.address,
        "flannel-iface": "eth0", "network": network_settings(spec),
    }  # fmt: skip
    if settings.flannel_backend:
        values["flannel-backend"] = settings.flannel_backend
    return values


# --- boards on the segment ----------------------------------------------------------------


class SegmentBoard(QemuBoard):
    """A board whose NIC sits on the cluster's multicast segment (and, for the server, also on
    a user-mode network that forwards the API port to the host)."""

    def __init__(
        self, spec: NodeSpec, image: Path, workdir: Path, mcast_port: int, api_port: int | None,
        *, snapshot: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(load_board(spec.board), image, workdir, snapshot=snapshot)
        self.spec = spec
        self.mcast_port = mcast_port
        self.api_port = api_port  # host port forwarded to the server's API, None on agents

    def network_args(self) -> list[str]:
        segment = f"socket,id=net0,mcast={MCAST_GROUP}:{self.mcast_port},localaddr=127.0.0.1"
        args = ["-netdev", segment]
        if self.api_port is not None:
            # A NIC of its own: slirp answers for every address it sees, so on the shared
            # segment it would reset the agents' connections to the server.
            forward = f"hostfwd=tcp:127.0.0.1:{self.api_port}-{HOST_NIC_ADDRESS}:{API_PORT}"
            args += ["-netdev", f"user,id=host,restrict=on,{forward}",
                     "-device", f"virtio-net-device,netdev=host,mac={HOST_NIC_MAC}"]  # fmt: skip
        return args

    def argv(self) -> list[str]:
        # The board's own arguments, with its user-mode NIC replaced by the segment (and a MAC
        # address of its own: QEMU gives every guest the same one by default).
        argv = super().argv()
        out: list[str] = []
        skip = False
        for i, arg in enumerate(argv):
            if skip:
                skip = False
                continue
            if arg == "-netdev" and argv[i + 1].startswith("user,id=net0"):
                out += self.network_args()
                skip = True
            elif arg.startswith("virtio-net-device,netdev=net0"):
                out.append(f"{arg},mac={self.spec.mac}")
            else:
                out.append(arg)
        if not any(arg.startswith("socket,id=net0") for arg in out):
            raise ClusterError(f"board {self.spec.board}: no '-netdev user,id=net0' to replace")
        return out

    def interface_with(self, mac: str) -> str:
        result = self.run(f"grep -il '^{mac}$' /sys/class/net/*/address", timeout=30)
        if result.exit_code != 0:
            raise ClusterError(f"{self.spec.name}: no interface has MAC {mac}")
        return result.output.strip().split("/")[-2]

    def bring_up_host_nic(self) -> None:
        """The boot configuration sets up one interface (the segment's); the host NIC gets
        the address slirp expects (the forwarded API port points at it)."""
        iface = self.interface_with(HOST_NIC_MAC)
        result = self.run(
            f"ip link set {iface} up && ip addr add {HOST_NIC_ADDRESS}/24 dev {iface}", timeout=30
        )
        if result.exit_code != 0:
            raise ClusterError(f"{self.spec.name}: cannot configure {iface}: {result.output}")

    def power_off(self, timeout: float = 60) -> None:
        """``poweroff`` on the console, then wait for QEMU to exit (a power-off ends it)."""
        if self._child is None:
            return
        try:
            if self._child.isalive():
                self._child.sendline("poweroff")
                self._child.expect(pexpect.EOF, timeout=timeout * self.factor)
        except (pexpect.TIMEOUT, OSError):
            pass  # stop() below ends QEMU the hard way
        self.stop()


DIAGNOSTICS = (
    "ip -br addr; ip route",
    "ip -s link show eth0",
    "ping -c 2 -W 2 192.0.2.10; ping -c 2 -W 2 192.0.2.11; ping -c 2 -W 2 192.0.2.12",
    "ip -d link show flannel.1; ip -s link show flannel.1; bridge fdb show dev flannel.1; ip neigh",
    "nft list ruleset | head -n 150",
    "docker ps -a",
    "top -b -n 1 | head -15",
    "tail -n 40 /var/log/*.log",
)


def diagnose(board: QemuBoard, target: Path) -> None:
    """After a failure: what the board says about its network, load and services, to a file."""
    with target.open("w") as out:
        for command in DIAGNOSTICS:
            try:
                result = board.run(command, timeout=60)
                out.write(f"$ {command}  (exit {result.exit_code})\n{result.output}\n")
            except ConsoleError as err:
                out.write(f"$ {command}\n(no answer: {err})\n")
                return  # a board that does not answer will not answer the next command either


# --- the run ------------------------------------------------------------------------------


def read_file_on(board: QemuBoard, path: str, seconds: float = 180) -> str:
    board.wait_until(f"test -s {path}", seconds)
    result = board.run(f"cat {path}", timeout=30)
    if result.exit_code != 0:
        raise ClusterError(f"{board.board.name}: cannot read {path}: {result.output.strip()}")
    return result.output


def host_kubeconfig(text: str, api_port: int, target: Path) -> None:
    """The server's admin kubeconfig, pointed at the forwarded API port on the host."""
    config = yaml.safe_load(text)
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{api_port}"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)


# kubectl's fallback poll of the nodes while they join, in seconds (the watch times them).
POLL_SECONDS = 10.0
# The server board's agent logs this once it joined and loaded its images (logfmt quotes it).
SETTLED = 'msg="k3py agent is running"'


def boot_cluster(
    settings: ClusterSettings,
    images: dict[str, Path],
    boards: list[SegmentBoard],
    report: ClusterReport,
    kubeconfig: Path,
    ports: tuple[int, int],
) -> None:
    """Fresh cards for every node, the server booted first, then the agents (once the server
    board's own agent runs), until every node is Ready: the stages timed in ``report``, each
    node's boot to Ready by the node watch's event.
    ``boards`` receives each board as it starts (the caller powers them off); ``ports`` are the
    segment's multicast port and the API's forwarded port."""
    mcast_port, api_port = ports
    with stage(report, "server boot"):
        server_dir = settings.out_dir / "nodes" / SERVER.name
        card = server_dir / "card.img"
        personalise(
            images[SERVER.image_name],
            card,
            {"role": "server", "tls-san": [SERVER.address], **node_settings(SERVER, settings)},
        )
        server = SegmentBoard(SERVER, card, server_dir, mcast_port, api_port)
        boards.append(server)
        os.sync()  # the images' and the card's writeback would compete with the board
        server.start()
        say(f"{SERVER.name}: console log {shown(server.console_log)}")
        server.wait_for_ready()
        segment_iface = server.interface_with(SERVER.mac)
        if segment_iface != "eth0":
            raise ClusterError(f"the segment's NIC is {segment_iface}, k3py.yaml says eth0")
        server.bring_up_host_nic()
        token = read_file_on(server, "/var/lib/k3py/server/token").strip()
        host_kubeconfig(read_file_on(server, "/etc/k3py/k3py.yaml"), api_port, kubeconfig)
        wait_for(
            "the server's API answering kubectl through the forwarded port",
            lambda: kubectl(kubeconfig, "get", "--raw", "/readyz", check=False).returncode == 0,
            180,
        )
        report.timings["server API up (since QEMU start)"] = time.monotonic() - server.started_at
    # Each node's time to Ready from the watch's event, not from a poll's interval; the watch
    # ends with the join (what follows, workload and idle figures, runs without a watcher).
    with ReadyWatch(kubeconfig) as watch:
        with stage(report, "server settles"):
            # Until the server board's own agent runs (joined, its images loaded): the agents
            # boot with a host core each, as boards in the field each have their own CPU,
            # instead of three emulated boards sharing the host's two cores.
            server.wait_until(f"grep -q '{SETTLED}' /var/log/k3py.log", 300, interval=1)
        with stage(report, "agents boot"):
            agents = []
            for spec in AGENTS:
                workdir = settings.out_dir / "nodes" / spec.name
                personalise(
                    images[spec.image_name],
                    workdir / "card.img",
                    {"role": "agent", "server": f"https://{SERVER.address}:{API_PORT}",
                     "token": token, **node_settings(spec, settings)},
                )  # fmt: skip
                agents.append(SegmentBoard(spec, workdir / "card.img", workdir, mcast_port, None))
            os.sync()  # the cards' writeback would compete with the boards for the host
            for agent in agents:
                boards.append(agent)
                agent.start()
                say(f"{agent.spec.name}: console log {shown(agent.console_log)}")
            for agent in boards[1:]:
                agent.wait_for_ready()
        with stage(report, "join"):
            pending = {spec.name for spec in NODES}
            polled = time.monotonic()

            def all_ready() -> bool:
                nonlocal polled
                # The watch's times first; kubectl itself only every POLL_SECONDS, for a Ready
                # the watch missed (each kubectl start takes a host core for a moment, which
                # the booting boards would miss).
                seen: dict[str, dict[str, str]] = {}
                if time.monotonic() - polled >= POLL_SECONDS:
                    seen = nodes(kubeconfig)
                    polled = time.monotonic()
                for name in sorted(pending):
                    board = next(b for b in boards if b.spec.name == name)
                    at = watch.ready_at(name, board.started_at)
                    if at is None and seen.get(name, {}).get("ready") == "True":
                        at = time.monotonic()  # the watch missed it: the poll's time
                    if at is not None:
                        took = at - board.started_at
                        report.timings[f"{name} boot to Ready"] = took
                        say(f"{name}: node Ready {took:.1f}s after its QEMU started")
                        pending.discard(name)
                return not pending

            wait_for("every node Ready (the server's and the agents')", all_ready, 420, interval=1)
            report.nodes = nodes(kubeconfig)


def run_cluster(settings: ClusterSettings, report: ClusterReport | None = None) -> ClusterReport:
    """Build, boot, join, run the workload, print the state; boards are always powered off."""
    report = report if report is not None else ClusterReport()
    if shutil.which("kubectl") is None:
        raise ClusterError("kubectl is missing: 'make setup' (or the integration tier) installs it")
    if settings.out_dir.exists():
        shutil.rmtree(settings.out_dir / "nodes", ignore_errors=True)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = settings.out_dir / "kubeconfig"
    # Random ports: several clusters (or tests) on one host must not share a segment.
    mcast_port = random.randint(20000, 60000)
    api_port = free_port()
    started = time.monotonic()
    with stage(report, "build"):
        images = {spec.image_name: ensure_image(spec, settings) for spec in (SERVER, *AGENTS)}
    boards: list[SegmentBoard] = []
    with ExitStack() as cleanup:

        def diagnose_on_failure(
            kind: type[BaseException] | None, exc: BaseException | None, tb: object
        ) -> None:
            if exc is None or not isinstance(exc, FAILURES):
                return
            for board in boards:
                target = board.workdir / "diagnostics.txt"
                say(f"{board.spec.name}: diagnostics in {target}")
                diagnose(board, target)

        def power_off_all() -> None:
            with stage(report, "power off"):
                for board in reversed(boards):
                    board.power_off()

        cleanup.callback(power_off_all)
        cleanup.push(diagnose_on_failure)
        boot_cluster(settings, images, boards, report, kubeconfig, (mcast_port, api_port))
        with stage(report, "workload"):
            manifest = settings.out_dir / "workload.yaml"
            manifest.write_text(workload_manifest())
            kubectl(kubeconfig, "apply", "-f", str(manifest))

            def running() -> bool:
                report.pods = pods(kubeconfig, f"app={WORKLOAD}")
                on_nodes = {p["node"] for p in report.pods if p["phase"] == "Running"}
                return on_nodes >= {spec.name for spec in NODES}

            wait_for("the workload's pods Running on every node", running, 420, interval=3)
        report.nodes = nodes(kubeconfig)
        report.nodes_wide = kubectl(kubeconfig, "get", "nodes", "-o", "wide").stdout
        report.pods_wide = kubectl(kubeconfig, "get", "pods", "-o", "wide").stdout
        print(report.nodes_wide, end="", flush=True)
        print(report.pods_wide, end="", flush=True)
        if settings.flannel_backend != "none":
            check_network(kubeconfig, report)
        if settings.while_up is not None:
            settings.while_up(boards, kubeconfig)
        if settings.keep_running:
            say(f"cluster up; kubectl --kubeconfig {kubeconfig} ...; press Enter to power off")
            sys.stdin.readline()
    report.timings["total"] = time.monotonic() - started
    say("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))
    return report


def check_network(kubeconfig: Path, report: ClusterReport) -> None:
    """Pod addresses from three pod CIDRs; a pod on the ARMv7 board fetches the page from the
    ARM64 agent's pod by pod IP, then through a Service by its DNS name; both exchanges printed."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl(kubeconfig, *args, check=check)

    running = {p["node"]: p for p in report.pods if p["phase"] == "Running"}
    client, target = running[AGENTS[1].name], running[AGENTS[0].name]
    with stage(report, "pod network"):
        cidrs = {name: node.get("podCIDR", "") for name, node in report.nodes.items()}
        problems = pod_cidr_problems(report.pods, cidrs, {spec.name for spec in NODES})
        if problems:
            raise NetworkCheckError("pod addresses: " + "; ".join(problems))
        url = f"http://{target['ip']}:{HTTPD_PORT}/"
        exchange = fetch_from_pod(
            run, client, url, f"pod {target['name']} on {target['node']}", 120
        )
        report.exchanges["pod IP"] = exchange
        say(exchange.shown())
    with stage(report, "service"):
        name = expose(run, target, f"app={WORKLOAD}")
        report.services_wide = run("get", "services", "-o", "wide").stdout
        print(report.services_wide, end="", flush=True)
        exchange = fetch_from_pod(
            run, client, f"http://{name}/", f"service {name.split('.')[0]}", 120
        )
        report.exchanges["service DNS"] = exchange
        say(exchange.shown())


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up that powers the boards off


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rebuild", action="store_true", help="build the images even if fresh")
    parser.add_argument(
        "--reuse-images", action="store_true", help="use existing images however old they are"
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="wait for Enter before powering off"
    )
    parser.add_argument(
        "--flannel-backend",
        choices=("vxlan", "host-gw", "none"),
        default="",
        help="every node's pod network backend (default: the firmware's, vxlan); with none"
        " the pod network and service checks are skipped",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    settings = ClusterSettings(
        rebuild=args.rebuild,
        reuse=args.reuse_images,
        keep_running=args.keep_running,
        flannel_backend=args.flannel_backend,
    )
    try:
        run_cluster(settings)
    except FAILURES as err:
        say(f"failed: {err}")
        say(f"console logs: {shown(settings.out_dir)}/nodes/*/console.log")
        return 1
    except KeyboardInterrupt:
        say("interrupted; the boards were powered off")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
