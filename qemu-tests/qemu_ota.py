"""Helpers for system updates on emulated boards: a server on the host, agent cards with an
update key in slot A, bundles of new versions made from that slot, UpdatePlans through kubectl,
and a board's life over one card (QEMU killed for power cuts, restarted on the same file).

A new version is made the cheap way: a copy of the card's slot A whose k3py metadata says a newer
version (``debugfs``), as a build of a newer k3py would differ; a bad one also cannot start its
agent and asks, on its own command line, for a short trial. Used by qemu-tests/test_ota_system.py
and bench/ota_system_bench.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qemu_driver import BOOT_PARTITION_OFFSET, QemuBoard, free_port, timeout_factor

from k3py.cluster.ota.blocks import BLOCK_SIZE, build_index
from k3py.cluster.ota.bundle import INDEX_PAYLOAD, SLOT_PAYLOAD
from k3py.image.board import load_board
from k3py.image.ota import bundler

HOST_ALIAS = "10.0.2.2"
DIST = "/usr/lib/python3/dist-packages"
MTOOLS = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def wait_for(what: str, check: Callable[[], bool], seconds: float, interval: float = 1) -> float:
    started = time.monotonic()
    deadline = started + seconds * timeout_factor()
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds * timeout_factor():.0f}s")
        time.sleep(interval)
    return time.monotonic() - started


@dataclass
class Server:
    port: int
    data: Path
    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def node_version(self, node: str) -> str:
        return self.kubectl("get", "node", node, "-o",
                            "jsonpath={.status.nodeInfo.kubeletVersion}", check=False)  # fmt: skip

    def ready(self, node: str) -> bool:
        jsonpath = 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
        return self.kubectl("get", "node", node, "-o", jsonpath, check=False).strip() == "True"

    def entry(self, plan: str, node: str) -> dict[str, str]:
        text = self.kubectl("get", "updateplan", plan, "-o", "json", check=False)
        try:
            nodes = (json.loads(text).get("status") or {}).get("nodes") or []
        except json.JSONDecodeError:
            return {}
        return next((e for e in nodes if e.get("name") == node), {})

    def phase(self, plan: str, node: str) -> str:
        return str(self.entry(plan, node).get("phase", ""))


@contextmanager
def serving(root: Path) -> Iterator[Server]:
    """A k3py server on the host's loopback (no agent of its own), reachable from QEMU's user
    network as 10.0.2.2."""
    if shutil.which("kubectl") is None:
        raise AssertionError("kubectl is missing (the integration tier installs /usr/bin/kubectl)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    kubeconfig = root / "kubeconfig"
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "k3py", "server", "--data-dir", str(root / "data"),
         "--bind-address", "127.0.0.1", "--https-listen-port", str(port),
         "--tls-san", HOST_ALIAS, "--disable-agent", "--write-kubeconfig", str(kubeconfig)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for("the server's kubeconfig", kubeconfig.exists, 60)
        yield Server(port, root / "data", kubeconfig)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def slot_a(image: Path) -> tuple[int, int]:
    facts = json.loads(image.with_name(image.name.removesuffix(".img") + ".manifest.json")
                       .read_text())  # fmt: skip
    part = next(p for p in facts["partitions"] if p["name"] == "rootA")
    return int(part["start"]), int(part["size"])


def dd(source: Path, target: Path, *, skip: int = 0, seek: int = 0, size: int) -> None:
    subprocess.run(["dd", f"if={source}", f"of={target}", "bs=1M", f"skip={skip >> 20}",
                    f"seek={seek >> 20}", f"count={size >> 20}", "conv=notrunc,sparse",
                    "status=none"], check=True)  # fmt: skip


def debugfs_write(fs: Path, files: dict[str, bytes], work: Path) -> None:
    """Replace (or add) files in an ext4 image, as a build with other inputs would have."""
    commands = []
    for number, (path, data) in enumerate(sorted(files.items())):
        local = work / f"file{number}"
        local.write_bytes(data)
        directory, _, name = path.rpartition("/")
        commands += [f"cd {directory or '/'}", f"rm {name}", f"write {local} {name}"]
    script = work / "debugfs.cmds"
    script.write_text("\n".join(commands) + "\n")
    subprocess.run(["debugfs", "-w", "-f", str(script), str(fs)], capture_output=True,
                   check=True)  # fmt: skip


def debugfs_cat(fs: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(fs)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


@dataclass
class Card:
    """A personalised copy of the image and what the bundles are made from."""

    board: str
    path: Path
    slot: Path  # slot A as the card holds it (with the update key)
    work: Path
    key: Path  # private key

    def bundle(self, version: str, *, bad: bool = False) -> Path:
        """A system bundle of slot A with k3py's metadata at ``version``."""
        slot = self.work / f"slot-{version}.ext4"
        subprocess.run(["cp", "--sparse=always", str(self.slot), str(slot)], check=True)
        dist_info = _dist_info(slot)
        metadata = debugfs_cat(slot, f"{DIST}/{dist_info}/METADATA")
        old = next(line for line in metadata.splitlines() if line.startswith("Version:"))
        files = {f"{DIST}/{dist_info}/METADATA":
                 metadata.replace(old, f"Version: {version}", 1).encode()}  # fmt: skip
        # The image's os-release names its k3py version (OS-IMAGE in kubectl get nodes -o wide).
        release = debugfs_cat(slot, "/usr/lib/os-release")
        files["/usr/lib/os-release"] = release.replace(old.split()[-1], version).encode()
        if bad:
            files[f"{DIST}/k3py/cluster/agent/agent.py"] = b'raise SystemExit("broken agent")\n'
            # The image's bytecode is unchecked-hash (reproducible builds): without this, the
            # old agent.pyc would still run. A pyc Python cannot read sends it to the source.
            for name in _listing(slot, f"{DIST}/k3py/cluster/agent/__pycache__"):
                if name.startswith("agent.") and name.endswith(".pyc"):
                    files[f"{DIST}/k3py/cluster/agent/__pycache__/{name}"] = b"not bytecode"
            cmdline = debugfs_cat(slot, "/boot/cmdline.env").strip()
            files["/boot/cmdline.env"] = f"{cmdline} k3py.trial=15\n".encode()
        debugfs_write(slot, files, self.work)
        out = self.work / f"system-{version}.k3pyb"
        size = slot.stat().st_size
        board = load_board(self.board)
        bundler.write_bundle(
            out, bundler.load_private_key(self.key), kind="system", version=version,
            architecture=board.architecture, compatible=[self.board], minimum_version=None,
            sources=[bundler.Source(SLOT_PAYLOAD, "slot", slot, 0, size, BLOCK_SIZE)],
            extra_payloads=[(INDEX_PAYLOAD, "index", build_index(slot))],
        )  # fmt: skip
        slot.unlink()
        return out


def _listing(slot: Path, directory: str) -> list[str]:
    return subprocess.run(["debugfs", "-R", f"ls {directory}", str(slot)], capture_output=True,
                          text=True, check=True).stdout.split()  # fmt: skip


def _dist_info(slot: Path) -> str:
    listing = _listing(slot, DIST)
    return next(w for w in listing if w.startswith("k3py-") and w.endswith(".dist-info"))


def make_card(image: Path, board: str, server: Server, work: Path) -> Card:
    work.mkdir(parents=True, exist_ok=True)
    bundler.keygen(work / "ota-key.pem", work / "ota-key.pub")
    card = work / "card.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(card)], check=True)
    start, size = slot_a(image)
    slot = work / "slot-a.ext4"
    dd(image, slot, skip=start, size=size)
    debugfs_write(slot, {"/usr/lib/k3py/ota-key.pub": (work / "ota-key.pub").read_bytes()}, work)
    dd(slot, card, seek=start, size=size)
    token = (server.data / "server" / "token").read_text().strip()
    settings = work / "k3py.yaml"
    settings.write_text(f"role: agent\nserver: https://{HOST_ALIAS}:{server.port}\n"
                        f"token: {token}\nnode-name: {board}\n")  # fmt: skip
    subprocess.run(["mcopy", "-o", "-i", f"{card}@@{BOOT_PARTITION_OFFSET}", str(settings),
                    "::k3py.yaml"], check=True, env=MTOOLS)  # fmt: skip
    return Card(board, card, slot, work, work / "ota-key.pem")


def push(server: Server, bundle: Path) -> None:
    subprocess.run([sys.executable, "-m", "k3py", "ota", "push", str(bundle), "--kubeconfig",
                    str(server.kubeconfig)], check=True, capture_output=True)  # fmt: skip
    bundle.unlink()  # the server keeps its copy


def plan(server: Server, name: str, version: str, board: str) -> None:
    manifest = {"apiVersion": "ota.k3py.io/v1", "kind": "UpdatePlan", "metadata": {"name": name},
                "spec": {"version": version, "kind": "system", "maxUnavailable": 1,
                         "nodeSelector": {"kubernetes.io/hostname": board}}}  # fmt: skip
    subprocess.run(["kubectl", "--kubeconfig", str(server.kubeconfig), "apply", "-f", "-"],
                   input=json.dumps(manifest), text=True, check=True,
                   capture_output=True)  # fmt: skip


class Life:
    """One board's QEMU runs over the same card: power cuts are SIGKILLs of QEMU."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.qemu: QemuBoard | None = None
        self.boots = 0

    def start(self) -> QemuBoard:
        self.boots += 1
        self.qemu = QemuBoard(load_board(self.card.board), self.card.path,
                              self.card.work / "vm", snapshot=False)  # fmt: skip
        self.qemu.start()
        return self.qemu

    def cut_power(self) -> None:
        assert self.qemu is not None
        os.kill(self.qemu.child.pid, signal.SIGKILL)
        self.qemu.stop()
        self.qemu = None

    def stop(self) -> None:
        if self.qemu is not None:
            self.qemu.stop()
            self.qemu = None


def console_slot(qemu: QemuBoard, timeout: float = 120) -> str:
    return qemu.expect(r"k3py-boot: slot ([ab]) ", timeout).group(1)
