"""install.sh on a real systemd: the seed's two install lines make a two-node cluster.

Two Debian 13 machines (see :mod:`tests.install.nspawn`) on a veth pair of their own: the server
installs from the wheel of this tree with the seed's flags, the second machine joins with the one
line from the first (``curl … /static/install.sh | K3PY_URL=… K3PY_TOKEN=… sh -``). Docker does
not run inside the machines, so both nodes run the fake runtime (``K3PY_RUNTIME=fake``: pods
without processes) and no pod network (``--flannel-backend none``); everything else is what a
board that keeps its OS runs. The uninstall scripts must leave each machine's files as they were.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.image import firmware
from tests.install import nspawn

pytestmark = [pytest.mark.nspawn, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
SERVER_IP, AGENT_IP = "192.0.2.1", "192.0.2.2"
SEED_SERVER_FLAGS = (
    "--docker --node-ip=192.0.2.1 --flannel-iface=eth0 --write-kubeconfig-mode 644"
    " --no-deploy=servicelb --no-deploy=traefik --flannel-backend none"
)
SEED_AGENT_FLAGS = "--docker --node-ip=192.0.2.2 --flannel-iface=eth0 --flannel-backend none"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree and install.sh, as the server machine sees them at /mnt/k3py."""
    if shutil.which("systemd-nspawn") is None or shutil.which("mmdebstrap") is None:
        pytest.fail("systemd-nspawn and mmdebstrap are needed (make apt installs them)")
    out = tmp_path_factory.mktemp("bundle")
    # K3PY_TEST_WHEEL: a wheel built elsewhere (a clean export) instead of this tree's.
    given = os.environ.get("K3PY_TEST_WHEEL")
    wheel = Path(given) if given else firmware.build_wheel(REPO, nspawn.cache_dir())
    shutil.copy(wheel, out / "k3py.whl")
    shutil.copy(REPO / "cluster" / "install" / "install.sh", out / "install.sh")
    return out


@pytest.fixture(scope="module")
def pair(bundle: Path) -> Iterator[tuple[nspawn.Machine, nspawn.Machine]]:
    root = nspawn.tree()
    with nspawn.machines(
        root, ("k3pyinst-server", "k3pyinst-agent"), (SERVER_IP, AGENT_IP), bundle
    ) as machines:
        yield machines


def _kubectl(server: nspawn.Machine, kubeconfig: Path, *args: str) -> str:
    argv = server.in_netns("kubectl", f"--kubeconfig={kubeconfig}", *args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_seed_lines_make_a_two_node_cluster_and_uninstall_leaves_nothing(
    pair: tuple[nspawn.Machine, nspawn.Machine], tmp_path: Path
) -> None:
    server, agent = pair
    before = {m.name: m.files() for m in pair}

    started = time.monotonic()
    server.run(
        "curl -sfL file:///mnt/k3py/install.sh | INSTALL_K3PY_ARTIFACT=/mnt/k3py/k3py.whl"
        f' K3PY_RUNTIME=fake INSTALL_K3PY_EXEC="{SEED_SERVER_FLAGS}" sh -'
    )
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
    refused = agent.run(
        f"curl -sfL --cacert /run/server-ca.crt https://{SERVER_IP}:6443/static/install.sh"
        f" | K3PY_URL=https://{SERVER_IP}:6443 K3PY_TOKEN={forged} sh -",
        check=False,
    )
    assert refused.returncode == 1
    assert "does not match the token's hash" in refused.stderr
    started = time.monotonic()
    agent.run(
        f"curl -sfL --cacert /run/server-ca.crt https://{SERVER_IP}:6443/static/install.sh"
        f" | K3PY_URL=https://{SERVER_IP}:6443 K3PY_TOKEN={token} K3PY_RUNTIME=fake"
        f' INSTALL_K3PY_EXEC="{SEED_AGENT_FLAGS}" sh -'
    )
    agent_seconds = time.monotonic() - started
    assert agent.run("systemctl is-active k3py-agent").stdout.strip() == "active"
    assert "k3py agent is running" in agent.run("journalctl -u k3py-agent --no-pager -o cat").stdout

    kubeconfig = tmp_path / "k3py.yaml"
    kubeconfig.write_text(server.run("cat /etc/k3py/k3py.yaml").stdout)
    deadline = time.monotonic() + 60
    while True:
        nodes = _kubectl(server, kubeconfig, "get", "nodes", "--no-headers")
        rows = {line.split()[0]: line.split() for line in nodes.splitlines()}
        ready = all(r[1] == "Ready" for r in rows.values())
        if len(rows) == 2 and ready:
            break
        assert time.monotonic() < deadline, nodes
        time.sleep(1)
    assert rows["k3pyinst-server"][2] == "control-plane,master"
    assert rows["k3pyinst-agent"][2] == "<none>"
    statuses = _kubectl(server, kubeconfig, "get", "componentstatuses", "--no-headers")
    health = {line.split()[0]: line.split()[1] for line in statuses.splitlines()}
    assert health == {"scheduler": "Healthy", "controller-manager": "Healthy", "etcd-0": "Healthy"}
    print(f"install: server {server_seconds:.1f} s, agent {agent_seconds:.1f} s")
    # A restart returns once the server serves again (Type=notify), and kubectl answers at once.
    server.run("systemctl restart k3py")
    assert server.run("systemctl is-active k3py").stdout.strip() == "active"
    assert "k3pyinst-agent" in _kubectl(server, kubeconfig, "get", "nodes", "--no-headers")
    print("server files:", server.run("cat /usr/lib/k3py/files").stdout)

    # What a pod network leaves goes with k3py (made by hand here: the nodes run without one,
    # and veth pairs because the host may have no bridge or dummy module loaded).
    server.run(
        "ip link add cni0 type veth peer name k3pyx0"
        " && ip link add flannel.1 type veth peer name k3pyx1"
        " && nft add table inet k3py"
    )
    agent.run("k3py-agent-uninstall.sh")
    server.run("k3py-uninstall.sh")
    assert server.run("ip link show cni0", check=False).returncode != 0
    assert server.run("ip link show flannel.1", check=False).returncode != 0
    assert server.run("nft list table inet k3py", check=False).returncode != 0
    for machine in pair:
        after = machine.files()
        assert after == before[machine.name], (
            f"{machine.name}: left {sorted(after - before[machine.name])[:20]},"
            f" removed {sorted(before[machine.name] - after)[:20]}"
        )
        assert machine.run("systemctl is-active k3py k3py-agent", check=False).returncode != 0
