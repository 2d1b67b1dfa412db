"""The pod network's logic without a kernel: IPAM on disk, peers from Nodes, rules, flags."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.agent import cli as agent_cli
from k3py.cluster.agent.network import kernel
from k3py.cluster.agent.network.backend import Peer
from k3py.cluster.agent.network.ipam import Ipam, IpamError
from k3py.cluster.agent.network.nft import masquerade_script
from k3py.cluster.agent.network.podnet import NetworkConfig, annotations_for, peers_from
from k3py.cluster.server import cli as server_cli
from k3py.cluster.server import embedded_agent
from k3py.errors import UsageError

MAC = "aa:bb:cc:dd:ee:01"


def test_ipam_gives_each_sandbox_one_address_and_keeps_it_across_restarts(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path, "10.42.3.0/24")
    first = ipam.allocate("sandbox-a")
    assert first == "10.42.3.2"  # .1 is the bridge's
    assert ipam.allocate("sandbox-a") == first
    second = ipam.allocate("sandbox-b")
    assert second == "10.42.3.3"
    again = Ipam(tmp_path, "10.42.3.0/24")  # the agent restarted
    assert again.allocations == {"sandbox-a": first, "sandbox-b": second}
    assert again.allocate("sandbox-c") == "10.42.3.4"


def test_ipam_does_not_reuse_a_released_address_at_once(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path, "10.42.3.0/24")
    first = ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") != first
    assert not (tmp_path / first).exists()


def test_ipam_reconcile_releases_sandboxes_that_are_gone(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path, "10.42.3.0/24")
    kept = ipam.allocate("alive")
    gone = ipam.allocate("gone")
    assert ipam.reconcile({"alive"}) == [gone]
    assert Ipam(tmp_path, "10.42.3.0/24").allocations == {"alive": kept}


def test_ipam_drops_allocations_of_another_cidr_and_half_written_files(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path, "10.42.3.0/24")
    ipam.allocate("a")
    (tmp_path / "10.42.3.99").write_text("")  # a crash between create and write
    assert Ipam(tmp_path, "10.42.3.0/24").allocations == {"a": "10.42.3.2"}
    assert not (tmp_path / "10.42.3.99").exists()
    assert Ipam(tmp_path, "10.42.9.0/24").allocations == {}


def test_ipam_says_when_the_cidr_is_full(tmp_path: Path) -> None:
    ipam = Ipam(tmp_path, "10.42.3.0/29")  # 6 hosts, one the gateway
    for index in range(5):
        ipam.allocate(f"s{index}")
    with pytest.raises(IpamError, match="no free address in the pod CIDR 10.42.3.0/29"):
        ipam.allocate("one-more")


def _node(name: str, cidr: str, ip: str, mac: str = MAC, **extra: str) -> dict[str, Any]:
    annotations = {
        "flannel.alpha.coreos.com/public-ip": ip,
        "flannel.alpha.coreos.com/backend-data": json.dumps({"VNI": 1, "VtepMAC": mac}),
        **extra,
    }
    return {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"podCIDR": cidr} if cidr else {},
    }


def test_peers_are_the_other_nodes_with_a_cidr_and_flannel_annotations() -> None:
    nodes: list[dict[str, Any]] = [
        _node("me", "10.42.0.0/24", "192.0.2.11"),
        _node("b", "10.42.1.0/24", "192.0.2.12"),
        _node("no-cidr", "", "192.0.2.13"),
        {"metadata": {"name": "no-annotations"}, "spec": {"podCIDR": "10.42.4.0/24"}},
    ]
    assert peers_from(nodes, "me", "vxlan") == [Peer("b", "10.42.1.0/24", "192.0.2.12", MAC)]
    assert peers_from(nodes, "me", "host-gw") == [Peer("b", "10.42.1.0/24", "192.0.2.12", "")]
    broken = [_node("c", "10.42.2.0/24", "192.0.2.14")]
    broken[0]["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"] = "{"
    assert peers_from(broken, "me", "vxlan") == []
    assert Peer("b", "10.42.1.0/24", "192.0.2.12", MAC).vtep_ip == "10.42.1.0"


def test_the_node_publishes_flannels_annotations(tmp_path: Path) -> None:
    config = NetworkConfig("vxlan", "me", "192.0.2.11", "", "10.42.0.0/16", tmp_path)
    assert annotations_for(config, MAC) == {
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        "flannel.alpha.coreos.com/public-ip": "192.0.2.11",
        "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
    }
    host_gw = NetworkConfig("host-gw", "me", "192.0.2.11", "", "10.42.0.0/16", tmp_path)
    assert "flannel.alpha.coreos.com/backend-data" not in annotations_for(host_gw, "")


def test_masquerade_rules_spare_pod_to_pod_traffic_and_own_only_net_chains() -> None:
    script = masquerade_script("10.42.0.0/16")
    assert "add table inet k3py" in script
    assert "ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return" in script
    assert "ip daddr != 10.42.0.0/16 counter masquerade" in script
    assert "delete table" not in script
    for line in script.splitlines():
        if " chain " in line:
            assert line.split()[4].startswith("net-")


def _config(options: dict[str, str]) -> bytes:
    return "\n".join(f"CONFIG_{k}={v}" for k, v in options.items()).encode()


def test_kernel_check_names_the_missing_option_and_check_config() -> None:
    full = {o: "y" for o, _, _ in kernel.BY_BACKEND["vxlan"]}
    kernel.check_kernel("vxlan", release="6.1", read=lambda path: _config(full))
    without = {**full, "VXLAN": "m"}
    with pytest.raises(kernel.KernelFeatureMissing) as err:
        kernel.check_kernel(
            "vxlan",
            release="6.1",
            read=lambda path: _config(without),
            module_available=lambda name, release: False,
        )
    assert "CONFIG_VXLAN" in str(err.value)
    assert "k3py check-config" in str(err.value)
    kernel.check_kernel(
        "vxlan",
        release="6.1",
        read=lambda path: _config(without),
        module_available=lambda name, release: name == "vxlan",
    )
    kernel.check_kernel("host-gw", release="6.1", read=lambda path: _config(without))
    kernel.check_kernel("vxlan", release="6.1", read=lambda path: None)  # cannot tell


def _parse(add: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)  # type: ignore[operator]
    return parser.parse_args(argv)


def test_agent_flags_for_the_pod_network() -> None:
    args = _parse(agent_cli.add_arguments, ["--node-name", "n"])
    settings = agent_cli.settings_from(args, env={})
    assert (settings.flannel_backend, settings.cluster_cidr) == ("vxlan", "10.42.0.0/16")
    args = _parse(
        agent_cli.add_arguments,
        ["--node-name", "n", "--flannel-backend", "host-gw", "--flannel-iface", "eth1"],
    )
    settings = agent_cli.settings_from(args, env={})
    assert (settings.flannel_backend, settings.flannel_iface) == ("host-gw", "eth1")
    with pytest.raises(UsageError, match="--cluster-cidr"):
        agent_cli.settings_from(
            _parse(agent_cli.add_arguments, ["--node-name", "n", "--cluster-cidr", "x"]), env={}
        )
    with pytest.raises(UsageError, match="--node-ip"):
        agent_cli.settings_from(
            _parse(agent_cli.add_arguments, ["--node-name", "n", "--node-ip", "nope"]), env={}
        )


def test_the_server_hands_its_agent_flags_to_its_own_agent(tmp_path: Path) -> None:
    args = _parse(
        server_cli.add_arguments,
        [
            "--data-dir", str(tmp_path),
            "--node-name", "board1",
            "--node-ip", "192.0.2.11",
            "--node-label", "a=b",
            "--node-taint", "k=v:NoSchedule",
            "--flannel-backend", "host-gw",
            "--flannel-iface", "eth1",
            "--cluster-cidr", "10.52.0.0/16",
            "--pause-image", "my/pause:2",
            "--with-node-id",
        ],
    )  # fmt: skip
    argv = embedded_agent.command(server_cli.settings_from(args))
    tail = argv[argv.index("agent") :]
    pairs = {(tail[i], tail[i + 1]) for i in range(len(tail) - 1)}
    for pair in (
        ("--node-name", "board1"),
        ("--node-ip", "192.0.2.11"),
        ("--node-label", "a=b"),
        ("--node-taint", "k=v:NoSchedule"),
        ("--flannel-backend", "host-gw"),
        ("--flannel-iface", "eth1"),
        ("--cluster-cidr", "10.52.0.0/16"),
        ("--pause-image", "my/pause:2"),
    ):
        assert pair in pairs
    assert "--with-node-id" in tail
    default = embedded_agent.command(
        server_cli.settings_from(_parse(server_cli.add_arguments, ["--data-dir", str(tmp_path)]))
    )
    assert ("--flannel-backend", "vxlan") in set(itertools.pairwise(default))
    assert "--node-name" not in default


async def test_host_network_pods_stay_on_the_host_and_others_get_no_docker_network(
    tmp_path: Path,
) -> None:
    from k3py.cluster.agent.network.podnet import FlannelNetwork
    from k3py.cluster.agent.runtime import ContainerInfo
    from k3py.cluster.agent.runtime.fake import FakeRuntime
    from k3py.cluster.client import FakeClock
    from k3py.cluster.client.fake import FakeApi

    clock = FakeClock()
    config = NetworkConfig("vxlan", "me", "192.0.2.11", "", "10.42.0.0/16", tmp_path)
    network = FlannelNetwork(config, FakeApi(clock), FakeRuntime(clock), clock, "192.0.2.11")
    host_pod = {"spec": {"hostNetwork": True}}
    pod: dict[str, Any] = {"spec": {}}
    sandbox = ContainerInfo("abc", "POD", {}, "pause", "", "running", pid=1)
    assert network.sandbox_network(host_pod) == "host"
    assert network.sandbox_network(pod) == "none"
    assert await network.attach(host_pod, sandbox) == "192.0.2.11"
    await network.detach(host_pod, sandbox)  # nothing to undo
