"""sd_notify as systemd receives it: one datagram on $NOTIFY_SOCKET per state change."""

from __future__ import annotations

import socket
from pathlib import Path

from k3py.cluster import sdnotify


def test_ready_and_stopping_reach_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        assert sdnotify.notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": str(path)})
        assert receiver.recv(4096) == b"READY=1\nSTATUS=serving"
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": str(path)})
        assert receiver.recv(4096) == b"STOPPING=1"


def test_abstract_sockets_are_addressed_with_a_leading_nul() -> None:
    name = f"k3py-sdnotify-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert receiver.recv(64) == b"READY=1"


def test_outside_systemd_nothing_is_sent(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", {})
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    # A socket that went away is not an error: readiness is advisory.
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})
