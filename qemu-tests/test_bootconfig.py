"""The boot partition's ``k3py.yaml`` configures the board at boot: one image, many boards.

The settings are written onto a copy of the card's FAT partition with mtools, as a user (or
``k3py flash --config``) would, and read back from the running system through the console.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from qemu_driver import BOOT_PARTITION_OFFSET, QemuBoard

from k3py.image.board import load_board
from tests.image.builds import ImageFor

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

RESTORED = "k3py.yaml unchanged since it was last applied: its settings restored"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK3pyTestKeyOnlyForTheImageTier test@example.com"
# openssl passwd -6 -salt k3pysalt k3py-test
PASSWORD_HASH = (
    "$6$k3pysalt$4NRJBMb70aY245yajgoTRorpV6OReaGKpApN8BmtG1KE75Na69v"
    "DRa9lLYi5n.f6FqnV6X1w/d.SxGcpWjYS1."
)
SETTINGS = f"""\
role: server
hostname: edge-01
node-label: [example.com/zone=a]
tls-san: [edge-01.example.com]
tls-sna: [a-typo.example.com]
ssh-authorized-keys: ["{SSH_KEY}"]
network:
  mode: static
  interface: eth0
  address: 10.0.2.20/24
  gateway: 10.0.2.2
  dns: [10.0.2.3]
"""


def test_k3py_yaml_sets_hostname_static_network_ssh_keys_and_service_flags(
    image_for: ImageFor, tmp_path: Path
) -> None:
    built = image_for("qemu-virt-arm64", "server")
    card = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.image), str(card)], check=True)
    settings = tmp_path / "k3py.yaml"
    settings.write_text(SETTINGS)
    subprocess.run(
        ["mcopy", "-o", "-i", f"{card}@@{BOOT_PARTITION_OFFSET}", str(settings), "::k3py.yaml"],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    with QemuBoard(load_board("qemu-virt-arm64"), card, tmp_path / "vm") as qemu:
        qemu.wait_for_ready()
        # A key no flag of the role's command has: one console line, and the rest applies.
        assert (
            "k3py-bootconfig: k3py.yaml: unknown key 'tls-sna' (no flag --tls-sna; "
            "did you mean 'tls-san'?); ignored"
        ) in qemu.console_log.read_text(errors="replace")
        assert qemu.run("hostname").output.strip() == "edge-01"
        address = qemu.run("ip -4 -o addr show dev eth0").output
        assert "10.0.2.20/24" in address  # static, not the .15 QEMU's DHCP would lease
        assert "default via 10.0.2.2" in qemu.run("ip route").output
        assert "nameserver 10.0.2.3" in qemu.run("cat /etc/resolv.conf").output
        assert SSH_KEY in qemu.run("cat /root/.ssh/authorized_keys").output
        qemu.wait_until("netstat -ltn | grep -q ':22 '", 60)  # dropbear, for those keys
        flags = qemu.run("cat /etc/k3py/config.yaml").output
        assert "example.com/zone=a" in flags
        assert "edge-01.example.com" in flags
        assert "a-typo" not in flags
        # Server images carry the container runtime: the server runs its node's agent unless
        # k3py.yaml says disable-agent.
        assert "disable-agent" not in flags
        assert qemu.run("stat -c %a /etc/k3py/config.yaml").output.strip() == "600"

        # Rebooted with the same k3py.yaml: what the last boot applied is restored without
        # starting Python, and its console lines come again.
        qemu.child.sendline("reboot")
        qemu.wait_for_ready()
        log = qemu.console_log.read_text(errors="replace")
        assert log.count(RESTORED) == 1
        assert log.count("unknown key 'tls-sna'") == 2
        assert qemu.run("hostname").output.strip() == "edge-01"
        assert "10.0.2.20/24" in qemu.run("ip -4 -o addr show dev eth0").output
        assert qemu.run("cat /etc/k3py/config.yaml").output == flags
        assert qemu.run("stat -c %a /etc/k3py/config.yaml").output.strip() == "600"
        assert SSH_KEY in qemu.run("cat /root/.ssh/authorized_keys").output

        # Edited on the card (here from the board itself): applied afresh at the next boot.
        edit = qemu.run(
            "mount -o remount,rw /boot/firmware && "
            "sed -i 's/^hostname: edge-01$/hostname: edge-02/' /boot/firmware/k3py.yaml && sync"
        )
        assert edit.exit_code == 0, edit.output
        qemu.child.sendline("reboot")
        qemu.wait_for_ready()
        assert qemu.run("hostname").output.strip() == "edge-02"
        assert qemu.console_log.read_text(errors="replace").count(RESTORED) == 1


def test_a_root_password_hash_turns_the_console_shell_into_a_login(
    image_for: ImageFor, tmp_path: Path
) -> None:
    built = image_for("qemu-virt-arm64", "server")
    card = tmp_path / "card.img"
    subprocess.run(["cp", "--sparse=always", str(built.image), str(card)], check=True)
    settings = tmp_path / "k3py.yaml"
    # Also a server-only board: disable-agent parks the container runtime.
    settings.write_text(
        f'role: server\nroot-password-hash: "{PASSWORD_HASH}"\ndisable-agent: true\n'
    )
    subprocess.run(
        ["mcopy", "-o", "-i", f"{card}@@{BOOT_PARTITION_OFFSET}", str(settings), "::k3py.yaml"],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    board = load_board("qemu-virt-arm64")
    with QemuBoard(board, card, tmp_path / "vm", root_password="k3py-test") as qemu:
        qemu.wait_for_ready()  # only after logging in with the password
        assert qemu.run("id -u").output.strip() == "0"
        assert qemu.run("test -e /run/k3py/dockerd.disabled").exit_code == 0
        assert qemu.run("pidof dockerd").exit_code != 0
        assert qemu.run("pidof containerd").exit_code != 0
