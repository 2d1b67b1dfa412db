"""install.sh on a real systemd: the seed's two install lines make a two-node cluster.

Two Debian 13 machines (see :mod:`tests.install.nspawn`) that already run Docker, on a veth pair
of their own. The first server installs with the seed's line and flags from a distribution
point the test makes (a static HTTP server in its own namespace serving ``make dist``'s wheel
and installer, as a fleet's internal mirror would): ``curl -sfL http://MIRROR/install.sh |
INSTALL_K3PY_EXEC="--docker …" sh -``. The second machine joins with the line from the first
(``curl … https://SERVER:6443/static/install.sh | K3PY_URL=… K3PY_TOKEN=… sh -``). Both nodes
run their pods on the machines' Docker engines with the default pod network (flannel's vxlan
over ``eth0``): a pod on the agent fetches a page from a pod on the server by its pod IP.
Nothing is pulled: the busybox test image is imported into each machine's Docker. A reinstalled
agent is refused under its old name until its Node is deleted, then joins, as with K3s. The
uninstall scripts must leave each machine's files as they were, and nothing of the cluster may
appear in the host's own routes or firewall rules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.image import firmware
from tests.agent.images import TEST_IMAGE, rootfs_tar
from tests.install import nspawn
from tools.dist import stamp_installer

pytestmark = [pytest.mark.nspawn, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
SERVER_IP, AGENT_IP = "192.0.2.1", "192.0.2.2"
SERVER, AGENT = "k3pyinst-server", "k3pyinst-agent"
SEED_SERVER_FLAGS = (
    f"--docker --node-ip={SERVER_IP} --flannel-iface=eth0 --write-kubeconfig-mode 644"
    " --no-deploy=servicelb --no-deploy=traefik"
)
SEED_AGENT_FLAGS = f"--docker --node-ip={AGENT_IP} --flannel-iface=eth0"
# What of the cluster could leak into the host's own network configuration.
CLUSTER_WORDS = ("10.42.", "10.43.", "192.0.2.", "flannel", "cni0")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist MIRROR=…``'s wheel and installer, and the busybox image, at /mnt/k3py."""
    if shutil.which("systemd-nspawn") is None or shutil.which("mmdebstrap") is None:
        pytest.fail("systemd-nspawn and mmdebstrap are needed (make apt installs them)")
    out = tmp_path_factory.mktemp("bundle")
    # K3PY_TEST_WHEEL: a wheel built elsewhere (a clean export) instead of this tree's.
    given = os.environ.get("K3PY_TEST_WHEEL")
    wheel = Path(given) if given else firmware.build_wheel(REPO, nspawn.cache_dir())
    shutil.copy(wheel, out / wheel.name)
    script = (REPO / "cluster" / "install" / "install.sh").read_text()
    mirror = f"http://{nspawn.MIRROR_NET[0]}:8080"
    (out / "install.sh").write_text(stamp_installer(script, out / wheel.name, mirror))
    (out / "busybox.tar").write_bytes(rootfs_tar())
    return out


@pytest.fixture(scope="module")
def pair(bundle: Path) -> Iterator[tuple[nspawn.Machine, nspawn.Machine, str]]:
    root = nspawn.tree()
    with (
        nspawn.machines(root, (SERVER, AGENT), (SERVER_IP, AGENT_IP), bundle) as (server, agent),
        nspawn.distribution_point(server, bundle) as url,
    ):
        yield server, agent, url


def _kubectl(server: nspawn.Machine, kubeconfig: Path, *args: str, stdin: str = "") -> str:
    argv = server.in_netns("kubectl", f"--kubeconfig={kubeconfig}", *args)
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _host_network() -> set[str]:
    """The host's routes and firewall lines that name anything of the cluster."""
    lines: list[str] = []
    for argv in (
        ["ip", "route", "show", "table", "all"],
        ["nft", "list", "ruleset"],
        ["iptables-save"],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        lines += result.stdout.splitlines()
    return {line.strip() for line in lines if any(w in line for w in CLUSTER_WORDS)}


def _wait_nodes_ready(server: nspawn.Machine, kubeconfig: Path, names: set[str]) -> list[str]:
    deadline = time.monotonic() + 90
    while True:
        nodes = _kubectl(server, kubeconfig, "get", "nodes", "--no-headers")
        rows = {line.split()[0]: line.split() for line in nodes.splitlines()}
        if set(rows) == names and all(r[1] == "Ready" for r in rows.values()):
            return [" ".join(rows[n]) for n in sorted(names)]
        assert time.monotonic() < deadline, nodes
        time.sleep(1)


def _pod(name: str, node: str, command: list[str]) -> dict[str, object]:
    container = {"name": name, "image": TEST_IMAGE, "imagePullPolicy": "Never", "command": command}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [container], "terminationGracePeriodSeconds": 1},
    }


def _pod_ips(server: nspawn.Machine, kubeconfig: Path, names: set[str]) -> dict[str, str]:
    deadline = time.monotonic() + 90
    while True:
        listed = json.loads(_kubectl(server, kubeconfig, "get", "pods", "-o", "json"))
        ips = {
            p["metadata"]["name"]: p["status"].get("podIP", "")
            for p in listed["items"]
            if p["status"].get("phase") == "Running"
        }
        if names <= {n for n, ip in ips.items() if ip}:
            return ips
        assert time.monotonic() < deadline, json.dumps(listed["items"])[-3000:]
        time.sleep(1)


def _agent_line(token: str) -> str:
    return (
        f"curl -sfL --cacert /run/server-ca.crt https://{SERVER_IP}:6443/static/install.sh"
        f" | K3PY_URL=https://{SERVER_IP}:6443 K3PY_TOKEN={token}"
        f' INSTALL_K3PY_EXEC="{SEED_AGENT_FLAGS}" sh -'
    )


def test_seed_lines_make_a_two_node_cluster_and_uninstall_leaves_nothing(
    pair: tuple[nspawn.Machine, nspawn.Machine, str], tmp_path: Path
) -> None:
    server, agent, mirror = pair
    machines = (server, agent)
    host_before = _host_network()
    before = {m.name: m.files() for m in machines}
    for machine in machines:  # nothing is pulled: the pods' image is already on the machines
        machine.run(
            f"docker import --change 'CMD [\"/bin/sh\"]' /mnt/k3py/busybox.tar {TEST_IMAGE}"
        )

    started = time.monotonic()
    server.run(f'curl -sfL {mirror}/install.sh | INSTALL_K3PY_EXEC="{SEED_SERVER_FLAGS}" sh -')
    server_seconds = time.monotonic() - started
    assert server.run("systemctl is-active k3py").stdout.strip() == "active"
    journal = server.run("journalctl -u k3py --no-pager -o cat").stdout
    assert "k3py server is ready" in journal
    assert "k3py runs no traefik" in journal  # --no-deploy=traefik: a one-line note
    assert server.run("stat -c %a /etc/systemd/system/k3py.service.env").stdout.strip() == "600"
    assert server.run("stat -c %a /etc/k3py/k3py.yaml").stdout.strip() == "644"

    token = server.run("cat /var/lib/k3py/server/token").stdout.strip()
    ca = server.run("cat /var/lib/k3py/server/tls/server-ca.crt").stdout
    agent.run(f"cat > /run/server-ca.crt <<'EOF'\n{ca}EOF")
    # The wheel needs the join token; a token of another cluster's CA is refused before the
    # installer downloads anything (the final file comparison shows nothing was written).
    code = agent.run(
        "curl -s -o /dev/null -w '%{http_code}' --cacert /run/server-ca.crt"
        f" https://{SERVER_IP}:6443/static/k3py.whl"
    ).stdout
    assert code == "401"
    forged = "K10" + "0" * 64 + token[token.index("::") :]
    refused = agent.run(_agent_line(forged), check=False)
    assert refused.returncode == 1
    assert "does not match the token's hash" in refused.stderr
    # The agent's engine is stopped: the installer finds no Docker answering and starts it.
    agent.run("systemctl stop docker.socket docker.service")
    started = time.monotonic()
    agent.run(_agent_line(token))
    agent_seconds = time.monotonic() - started
    assert agent.run("systemctl is-active docker").stdout.strip() == "active"
    assert agent.run("systemctl is-active k3py-agent").stdout.strip() == "active"
    assert "k3py agent is running" in agent.run("journalctl -u k3py-agent --no-pager -o cat").stdout

    kubeconfig = tmp_path / "k3py.yaml"
    kubeconfig.write_text(server.run("cat /etc/k3py/k3py.yaml").stdout)
    rows = _wait_nodes_ready(server, kubeconfig, {SERVER, AGENT})
    assert rows[1].split()[2] == "control-plane,master", rows  # sorted: the server is second
    assert rows[0].split()[2] == "<none>", rows
    statuses = _kubectl(server, kubeconfig, "get", "componentstatuses", "--no-headers")
    health = {line.split()[0]: line.split()[1] for line in statuses.splitlines()}
    assert health == {"scheduler": "Healthy", "controller-manager": "Healthy", "etcd-0": "Healthy"}
    print(f"install: server {server_seconds:.1f} s, agent {agent_seconds:.1f} s")

    # Pods on both machines' Docker; the agent's pod reaches the server's by pod IP (vxlan).
    pods = {
        "web": _pod("web", SERVER, ["httpd", "-f", "-p", "8080", "-h", "/www"]),
        "client": _pod("client", AGENT, ["sleep", "3600"]),
    }
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(pods.values())})
    _kubectl(server, kubeconfig, "apply", "-f", "-", stdin=manifest)
    ips = _pod_ips(server, kubeconfig, set(pods))
    assert ips["web"].startswith("10.42.")
    assert ips["client"].startswith("10.42.")
    assert ips["web"].rsplit(".", 1)[0] != ips["client"].rsplit(".", 1)[0]  # one /24 per node
    # busybox's nc (its static wget crashes resolving even an address).
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ips['web']} 8080"
    page = _kubectl(server, kubeconfig, "exec", "client", "--", "sh", "-c", request)
    assert page.splitlines()[0].endswith("200 OK"), page
    assert page.endswith("hello from k3py\n")
    assert "vxlan" in agent.run("ip -d link show flannel.1").stdout

    # A restart returns once the server serves again (Type=notify), and kubectl answers at once.
    server.run("systemctl restart k3py")
    assert server.run("systemctl is-active k3py").stdout.strip() == "active"
    assert AGENT in _kubectl(server, kubeconfig, "get", "nodes", "--no-headers")
    print("server files:", server.run("cat /usr/lib/k3py/files").stdout)
    print("agent files:", agent.run("cat /usr/lib/k3py/files").stdout)

    # Reinstalled, the agent has a new node password: refused until its Node is deleted.
    agent.run("k3py-agent-uninstall.sh")
    rejoin = agent.run(_agent_line(token), check=False)
    assert rejoin.returncode != 0
    refusal = agent.run("journalctl -u k3py-agent --no-pager -o cat -n 20").stdout
    assert "kubectl delete node" in refusal, refusal
    _kubectl(server, kubeconfig, "delete", "node", AGENT)
    agent.run(_agent_line(token))
    _wait_nodes_ready(server, kubeconfig, {SERVER, AGENT})

    for machine in machines:  # the rejoined agent makes its vxlan device once it has a pod CIDR
        deadline = time.monotonic() + 30
        while machine.run("ip link show flannel.1", check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{machine.name} has no flannel.1"
            time.sleep(0.5)
    agent.run("k3py-agent-uninstall.sh")
    server.run("k3py-uninstall.sh")
    for machine in machines:
        assert machine.run("ip link show cni0", check=False).returncode != 0
        assert machine.run("ip link show flannel.1", check=False).returncode != 0
        assert machine.run("nft list table inet k3py", check=False).returncode != 0
        assert "10.42." not in machine.run("iptables -S DOCKER-USER", check=False).stdout
        assert machine.run("docker ps -aq --filter label=io.k3py.managed").stdout == ""
        after = machine.files()
        assert after == before[machine.name], (
            f"{machine.name}: left {sorted(after - before[machine.name])[:20]},"
            f" removed {sorted(before[machine.name] - after)[:20]}"
        )
        assert machine.run("systemctl is-active k3py k3py-agent", check=False).returncode != 0
    assert _host_network() <= host_before
