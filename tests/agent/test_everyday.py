"""Everyday verbs that reach a pod through its node's tunnel, on the real Docker engine:
``kubectl port-forward`` (pod and service, two ports, 10 MB each way), ``kubectl proxy`` to a
pod and a Service, and the official client 37.x's text-mode exec with stdin and its
``portforward``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pexpect
import pytest

from tests.agent.cluster import Server, remove_node_containers, unique, wait_until
from tests.agent.images import TEST_IMAGE, docker_tier, ensure_test_image
from tests.server.process import KUBECTL
from tests.server.test_client37 import run_client37

pytestmark = [*docker_tier(), pytest.mark.integration]

BIG = 10 * 1024 * 1024
WEB = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {
                "name": "web",
                "image": TEST_IMAGE,
                "command": [
                    "sh",
                    "-c",
                    f"head -c {BIG} /dev/urandom > /www/big; echo hello > /www/index.html;"
                    " exec httpd -f -p 8080 -h /www",
                ],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            },
            {
                "name": "echo",
                "image": TEST_IMAGE,
                "command": ["sh", "-c", "while true; do nc -l -p 9000 -e cat; done"],
            },
        ],
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "websvc", "namespace": "default"},
    "spec": {
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "echo", "port": 9000, "targetPort": 9000},
        ],
    },
}
SHELL = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "shell", "namespace": "default"},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "sh", "image": TEST_IMAGE, "command": ["sleep", "3600"]}],
    },
}

TALKER = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "talker", "namespace": "default"},
    "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [
            {"name": "sh", "image": TEST_IMAGE, "command": ["sh"], "stdin": True, "tty": True}
        ],
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    ensure_test_image()
    node = unique("everyday")
    server = Server(
        tmp_path_factory.mktemp("everyday"), "--flannel-backend", "none", embedded_agent=node
    )
    try:
        server.start()
        wait_until(lambda: server.node_ready(node), 60, "the node Ready")
        for manifest in (WEB, SERVICE, SHELL, TALKER):
            server.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        wait_until(
            lambda: all(server.pod_running(p) for p in ("web", "shell", "talker")), 60, "pods"
        )
        wait_until(
            lambda: "8080" in server.kubectl("get", "endpoints", "websvc").stdout, 30, "endpoints"
        )
        yield server
    finally:
        server.stop()
        remove_node_containers(node)


def _env(server: Server) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(server.kubeconfig),
        "HOME": str(server.root),
        "KUBECACHEDIR": str(server.root / "kube-cache"),
    }


@contextmanager
def background(
    server: Server, *args: str, ready: str, count: int = 1, env: dict[str, str] | None = None
) -> Iterator[list[str]]:
    """``kubectl ARGS`` running until the block ends; yields its first ``count`` lines that
    match ``ready`` (kubectl prints them once it listens)."""
    process = subprocess.Popen(
        [KUBECTL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_env(server), **(env or {})},
    )
    found: list[str] = []
    try:
        assert process.stdout is not None
        while len(found) < count:
            line = process.stdout.readline()
            assert line, f"kubectl {' '.join(args)} exited: {found}"
            if re.search(ready, line):
                found.append(line)
        yield found
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _local_ports(lines: list[str]) -> dict[int, int]:
    """``Forwarding from 127.0.0.1:L -> R`` lines → {remote: local}."""
    ports: dict[int, int] = {}
    for line in lines:
        match = re.search(r"127\.0\.0\.1:(\d+) -> (\d+)", line)
        if match:
            ports[int(match.group(2))] = int(match.group(1))
    return ports


def _echo(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = bytearray()

        def read() -> None:
            while chunk := sock.recv(1 << 16):
                received.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reader.join(60)
    return bytes(received)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
    return body


def test_port_forward_a_pod_two_ports_ten_megabytes_each_way(server: Server) -> None:
    remote_sum = server.kubectl("exec", "web", "-c", "web", "--", "sha256sum", "/www/big")
    with background(
        server,
        "port-forward",
        "pod/web",
        ":8080",
        ":9000",
        ready=r"Forwarding from 127",
        count=2,
    ) as lines:
        ports = _local_ports(lines)
        downloaded = _get(f"http://127.0.0.1:{ports[8080]}/big")
        assert len(downloaded) == BIG
        assert hashlib.sha256(downloaded).hexdigest() == remote_sum.stdout.split()[0]
        upload = os.urandom(BIG)
        assert _echo(ports[9000], upload) == upload


def test_port_forward_over_plain_spdy(server: Server) -> None:
    # kubectl before 1.30, or told not to use websockets: an HTTP upgrade to SPDY/3.1.
    with background(
        server,
        "port-forward",
        "pod/web",
        ":8080",
        ready=r"Forwarding from 127",
        env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
    ) as lines:
        ports = _local_ports(lines)
        assert len(_get(f"http://127.0.0.1:{ports[8080]}/big")) == BIG


def test_port_forward_a_service_ten_megabytes_each_way(server: Server) -> None:
    with background(
        server,
        "port-forward",
        "service/websvc",
        ":80",
        ":9000",
        ready=r"Forwarding from 127",
        count=2,
    ) as lines:
        ports = _local_ports(lines)
        # kubectl resolves the Service to a pod and forwards to its target ports.
        assert len(_get(f"http://127.0.0.1:{ports[8080]}/big")) == BIG
        upload = os.urandom(BIG)
        assert _echo(ports[9000], upload) == upload


def test_kubectl_proxy_reaches_a_pod_and_a_service(server: Server) -> None:
    with background(server, "proxy", "--port", "0", ready=r"Starting to serve on") as lines:
        port = int(lines[0].rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{port}/api/v1/namespaces/default"
        assert _get(f"{base}/services/websvc:80/proxy/index.html") == b"hello\n"
        assert _get(f"{base}/pods/web:8080/proxy/index.html") == b"hello\n"
        assert len(_get(f"{base}/services/websvc:http/proxy/big")) == BIG


def test_client37_text_exec_with_stdin_and_port_forward(server: Server) -> None:
    out = run_client37(server.kubeconfig, "exec_text_stdin", "port_forward")
    assert "ok port_forward" in out


def test_kubectl_attach_it_to_a_shell(server: Server) -> None:
    # A real terminal for kubectl, as a user at a console has.
    child = pexpect.spawn(
        KUBECTL, ["attach", "-it", "talker", "-c", "sh"], env=_env(server), timeout=30
    )
    try:
        child.expect("try pressing enter")
        child.sendline("")
        child.expect("#")
        child.sendline("echo attached-$((6 * 7))")
        child.expect("attached-42")
    finally:
        child.terminate(force=True)
    # Detaching leaves the process running.
    assert server.pod_running("talker")


def test_exec_and_attach_over_plain_spdy(server: Server) -> None:
    # kubectl before 1.30, or told not to use websockets: an HTTP upgrade to SPDY/3.1.
    env = {**_env(server), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}

    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    piped = kubectl("exec", "-i", "shell", "--", "sh", stdin="echo $((6 * 7))\n")
    assert piped.stdout.strip() == "42", piped.stderr
    failed = kubectl("exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (failed.returncode, failed.stdout) == (7, "out\n")
    assert "err" in failed.stderr
    child = pexpect.spawn(KUBECTL, ["attach", "-it", "talker", "-c", "sh"], env=env, timeout=30)
    try:
        child.expect("try pressing enter")
        child.sendline("")
        child.expect("#")
        child.sendline("echo spdy-$((6 * 7))")
        child.expect("spdy-42")
    finally:
        child.terminate(force=True)
