"""Boot smoke test: each QEMU board's image, as built, boots to a running k3py service.

The console is logged whole to ``console.log`` in the test's temporary directory; the time from
QEMU's start to the running service is reported as a test property.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from qemu_driver import QemuBoard, free_port, timeout_factor

from k3py.image.board import load_board
from tests.image.builds import ImageFor

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

QEMU_IMAGES = [
    ("qemu-virt-arm64", "agent"),
    ("qemu-virt-arm64", "server"),
    ("qemu-virt-armv7", "agent"),
    ("qemu-virt-armv7", "server"),
]


@pytest.mark.parametrize(("board", "role"), QEMU_IMAGES)
def test_image_boots_to_running_k3py_service(
    board: str,
    role: str,
    image_for: ImageFor,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    built = image_for(board, role)
    with QemuBoard(load_board(board), built.image, tmp_path) as qemu:
        ready = qemu.wait_for_ready()
        # The firmware as packaged runs on the board's own Python (bytecode compiled at build).
        version = qemu.run("k3py --version")
        assert version.exit_code == 0, version.output
        assert version.output.strip().startswith("k3py ")
        layout = qemu.run("cat /etc/k3py-role; mount | grep -c ' on / type ext4 (ro'")
        assert layout.output.split() == [role, "1"]
        # The supervised service (busybox init respawns the firmware launcher, which runs k3py
        # as its child); the brackets keep grep from finding itself.
        find = f"ps | grep '[p]ython3 -P -m k3py {role}' | awk '{{print $1}}'"
        service = qemu.wait_until(f"{find} | grep -q .", 120, interval=0.5)
        assert qemu.run(f"ps | grep -q '[k]3py.cluster.ota.launcher {role}'").exit_code == 0
        # Running, not crash-looping under the supervisor: the same process a while later.
        first = qemu.run(find).output.split()
        time.sleep(10 * timeout_factor())
        assert qemu.run(find).output.split() == first, f"k3py {role} restarted"
        # Both roles run workloads, so both start the container runtime: containerd as a
        # service of its own, dockerd connected to it.
        qemu.wait_until("test -S /run/docker.sock", 180)
        engine = qemu.run("ps | grep -c '[c]ontainerd --config /usr/lib/k3py/containerd.toml'")
        assert engine.output.strip() == "1", engine.output
        ping = qemu.run(
            'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); '
            "s.connect('/run/docker.sock'); s.sendall(b'GET /_ping HTTP/1.0\\r\\n\\r\\n'); "
            'print(s.recv(4096).decode())"'
        )
        assert "200 OK" in ping.output, ping.output
        assert "Server: Docker/" in ping.output, ping.output
        # Public CAs through OpenSSL's hashed directory: found when a chain is checked, none
        # parsed when a program makes a default SSL context.
        trust = qemu.run(
            "openssl verify /usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt && python3 -c "
            "'import ssl; print(len(ssl.create_default_context().get_ca_certs()))'"
        )
        assert trust.output.split()[-2:] == ["OK", "0"], trust.output
        # The kernel's on-demand loads go through the image's loader: a module nothing loaded
        # at boot still loads when a link of its type is made, and a request for a foreign
        # executable format's handler is answered without starting modprobe.
        loader = qemu.run(
            "cat /proc/sys/kernel/modprobe; ip link add k3pyprobe type dummy && "
            "lsmod | grep -c '^dummy '; ip link del k3pyprobe; "
            "/usr/lib/k3py/kernel-modprobe -q -- binfmt-464c; echo $?"
        )
        assert loader.output.split() == ["/usr/lib/k3py/kernel-modprobe", "1", "1"], loader.output
        # U-Boot took its environment from the board's flash: no countdown, the card first.
        console = qemu.console_log.read_text(errors="replace")
        assert "Loading Environment from Flash... OK" in console
        assert "autoboot:  0" in console
        # The early boot's milestones are in the kernel's log, with its timestamps.
        marks = qemu.run("dmesg | sed -n 's/.*k3py-boot: //p'").output.split("\n")
        assert [m.strip() for m in marks if m.strip()] == [
            "early boot started", "modules loaded", "data partition mounted",
            "boot configuration applied", "network configured",
        ]  # fmt: skip
        record_property("boot_to_shell_s", round(ready, 1))
        record_property("boot_to_service_s", round(service, 1))
        print(f"{board}-{role}: shell after {ready:.1f}s, k3py {role} after {service:.1f}s")


def _readyz(port: int) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # readiness only; the test's own loopback forward
    request = urllib.request.Request(f"https://127.0.0.1:{port}/readyz")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("board", ["qemu-virt-arm64", "qemu-virt-armv7"])
def test_server_image_answers_readyz_on_forwarded_port(
    board: str, image_for: ImageFor, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    built = image_for(board, "server")
    port = free_port()
    with QemuBoard(load_board(board), built.image, tmp_path, forwards={6443: port}) as qemu:
        qemu.wait_for_ready()
        available = qemu.run("k3py server --help > /dev/null 2>&1")
        if available.exit_code != 0:
            pytest.skip("this firmware has no 'k3py server' command yet")
        deadline = time.monotonic() + 240 * timeout_factor()
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status = _readyz(port)
            except (OSError, urllib.error.URLError):
                status = 0
            time.sleep(2)
        assert status == 200, f"/readyz never answered 200 (see {qemu.console_log})"
        record_property("boot_to_readyz_s", round(time.monotonic() - qemu.started_at, 1))
        print(json.dumps({"board": board, "readyz_after_s": time.monotonic() - qemu.started_at}))


def _table(image: Path) -> list[dict[str, int]]:
    listing = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    partitions: list[dict[str, int]] = json.loads(listing)["partitiontable"]["partitions"]
    return partitions


def test_first_boot_grows_the_data_partition_to_fill_the_disk(
    image_for: ImageFor, tmp_path: Path
) -> None:
    built = image_for("qemu-virt-arm64", "server")
    card = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.image), str(card)], check=True)
    with card.open("r+b") as file:
        file.truncate(card.stat().st_size + 512 * 1024 * 1024)  # a bigger "SD card"
    with QemuBoard(load_board("qemu-virt-arm64"), card, tmp_path / "vm", snapshot=False) as qemu:
        qemu.wait_for_ready()
        size = qemu.run("df -k /var | awk 'NR==2 {print $2}'")
        assert size.exit_code == 0
        assert int(size.output.split()[-1]) > 512 * 1024  # KiB: the 128 MiB partition grew
        marker = qemu.run("test -e /var/lib/k3py/.data-grown")
        assert marker.exit_code == 0
    # The card's own table says so too (the next boot's kernel reads it): the data partition
    # ends at the card's last whole MiB; the other partitions are as the image made them.
    *others, data = _table(card)
    assert data["start"] + data["size"] == card.stat().st_size // 512 // 2048 * 2048
    assert [p["size"] for p in others] == [p["size"] for p in _table(built.image)[:-1]]
