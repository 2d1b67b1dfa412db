"""Running-system checks on described machines: cgroups, memory cgroup, firewall tools, swap,
routes, and finding the running kernel's config."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from k3py.cluster.checkconfig import Report, State, check_config_file, check_running_system
from k3py.cluster.checkconfig.errors import ConfigNotFoundError
from k3py.cluster.checkconfig.system import FakeSystem
from tests.checkconfig.helpers import config_text, kernel_tree, required_values, write_config

RELEASE = "6.12.38-test"
V2_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n"
HYBRID_MOUNTS = (
    "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
    "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
    "cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0\n"
    "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    "cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n"
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
)
PROC_CGROUPS = (
    "#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
    "cpuset\t3\t1\t1\ncpu\t1\t1\t1\nmemory\t4\t29\t{memory}\npids\t8\t1\t1\n"
)
ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)


def _route(interface: str, destination: str, mask: str) -> str:
    def little_endian(dotted: str) -> str:
        return bytes(int(x) for x in dotted.split("."))[::-1].hex().upper()

    fields = [interface, little_endian(destination), "00000000", "0001", "0", "0", "0"]
    return "\t".join([*fields, little_endian(mask), "0", "0", "0"]) + "\n"


def _machine(overrides: dict[str, bytes | str] | None = None) -> FakeSystem:
    """A healthy cgroup v2 machine with nftables-mode iptables; override any file."""
    files: dict[str, bytes | str] = {
        "/proc/config.gz": gzip.compress(config_text(required_values()).encode()),
        "/proc/mounts": V2_MOUNTS,
        "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
        "/proc/cmdline": "console=ttyAMA0 root=/dev/mmcblk0p2 rootwait\n",
        "/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n",
        "/proc/net/route": ROUTE_HEADER
        + _route("eth0", "0.0.0.0", "0.0.0.0")
        + _route("eth0", "192.168.1.0", "255.255.255.0"),
        "/proc/sys/kernel/keys/root_maxkeys": "1000000\n",
    }
    files.update(overrides or {})
    return FakeSystem(
        release=RELEASE,
        files=files,
        commands={
            "iptables --version": "iptables v1.8.11 (nf_tables)\n",
            "nft --version": "nftables v1.1.3 (Commodore Bullmoose #4)\n",
        },
    )


def _system_rows(report: Report) -> dict[str, tuple[State, str, str]]:
    group = next(g for g in report.groups if g.name == "system")
    return {f.name: (f.state, f.detail, f.hint) for f in group.findings}


def test_healthy_cgroup_v2_machine_passes() -> None:
    report = check_running_system(system=_machine())
    assert report.source == "/proc/config.gz"
    assert report.failures == 0
    rows = _system_rows(report)
    assert rows["cgroup hierarchy"][:2] == (State.OK, "v2")
    assert rows["memory cgroup"][0] is State.OK
    assert rows["iptables/nft"][:2] == (
        State.OK,
        "iptables v1.8.11 (nf_tables mode); nftables v1.1.3",
    )
    assert rows["swap"][:2] == (State.OK, "off")
    assert rows["routes"][0] is State.OK


def test_memory_cgroup_off_fails_with_the_raspberry_pi_hint() -> None:
    machine = _machine({"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io pids\n"})
    report = check_running_system(system=machine)
    state, detail, hint = _system_rows(report)["memory cgroup"]
    assert state is State.MISSING
    assert "cgroup_enable=memory cgroup_memory=1" in hint
    assert "cmdline.txt" in hint
    assert detail == "not enabled in the running kernel"
    assert report.failures == 1


def test_memory_disabled_on_the_command_line_on_cgroup_v1() -> None:
    machine = _machine(
        {
            "/proc/mounts": HYBRID_MOUNTS,
            "/proc/cgroups": PROC_CGROUPS.format(memory=0),
            "/proc/cmdline": "console=serial0,115200 cgroup_disable=memory root=/dev/mmcblk0p2\n",
        }
    )
    rows = _system_rows(check_running_system(system=machine))
    assert rows["cgroup hierarchy"][1] == "v1 (hybrid)"
    assert rows["cgroup controllers"][0] is State.OK
    assert rows["memory cgroup"][:2] == (
        State.MISSING,
        "disabled by cgroup_disable=memory on the kernel command line",
    )


def test_missing_controllers_and_hierarchy() -> None:
    no_pids = _machine({"/sys/fs/cgroup/cgroup.controllers": "cpu memory\n"})
    assert _system_rows(check_running_system(system=no_pids))["cgroup controllers"][:2] == (
        State.MISSING,
        "not available: cpuset pids",
    )
    unmounted = check_running_system(system=_machine({"/proc/mounts": "proc /proc proc rw 0 0\n"}))
    assert _system_rows(unmounted)["cgroup hierarchy"][0] is State.MISSING


@pytest.mark.parametrize(
    ("commands", "state", "text"),
    [
        ({"iptables --version": "iptables v1.8.2 (nf_tables)\n"}, State.MISSING, "1.8.0-1.8.3"),
        ({"iptables --version": "iptables v1.8.2 (legacy)\n"}, State.OK, "legacy mode"),
        ({"nft --version": "nftables v1.0.6 (Lester Gooch #5)\n"}, State.OK, "nftables v1.0.6"),
        ({}, State.WARNING, "neither iptables nor nft"),
    ],
)
def test_iptables_and_nft(commands: dict[str, str], state: State, text: str) -> None:
    machine = _machine()
    machine = FakeSystem(machine.release, machine.files, commands)
    found, detail, _ = _system_rows(check_running_system(system=machine))["iptables/nft"]
    assert found is state
    assert text in detail


def test_swap_routes_keys_and_apparmor_warnings() -> None:
    machine = _machine(
        {
            "/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n/var/swap file\t102396\t0\t-2\n",
            "/proc/net/route": ROUTE_HEADER
            + _route("eth0", "0.0.0.0", "0.0.0.0")
            + _route("eth1", "10.42.7.0", "255.255.255.0")
            + _route("cni0", "10.42.0.0", "255.255.255.0"),
            "/proc/sys/kernel/keys/root_maxkeys": "200\n",
            "/sys/module/apparmor/parameters/enabled": "Y\n",
        }
    )
    report = check_running_system(system=machine)
    rows = _system_rows(report)
    assert rows["swap"][:2] == (State.WARNING, "on: /var/swap (99 MiB)")
    assert rows["routes"][:2] == (State.WARNING, "10.42.7.0/24 dev eth1 overlaps 10.42.0.0/16")
    assert rows["root_maxkeys"][0] is State.WARNING
    assert rows["apparmor"][0] is State.MISSING  # enabled but no apparmor_parser
    assert report.failures == 1


def test_config_discovery_falls_back_to_boot_config() -> None:
    machine = _machine()
    files = dict(machine.files)
    del files["/proc/config.gz"]
    files[f"/boot/config-{RELEASE}"] = config_text(required_values())
    report = check_running_system(system=FakeSystem(RELEASE, files, machine.commands))
    assert report.source == f"/boot/config-{RELEASE}"
    del files[f"/boot/config-{RELEASE}"]
    with pytest.raises(ConfigNotFoundError, match="modprobe configs") as raised:
        check_running_system(system=FakeSystem(RELEASE, files, machine.commands))
    assert raised.value.exit_code == 66


def test_explicit_path_gets_system_checks_only_if_it_is_the_running_kernels(
    tmp_path: Path,
) -> None:
    machine = _machine()
    same = write_config(tmp_path / "same.config", required_values())
    other = write_config(tmp_path / "other.config", required_values() | {"VXLAN": "y"})
    assert "system" in [g.name for g in check_config_file(same, system=machine).groups]
    assert "system" not in [g.name for g in check_config_file(other, system=machine).groups]


def test_running_kernel_modules_are_verified_when_its_tree_exists(tmp_path: Path) -> None:
    values = required_values() | {"MODULES": "y", "VETH": "m"}
    tree = kernel_tree(tmp_path, values, release=RELEASE)
    machine = _machine({"/proc/config.gz": gzip.compress(config_text(values).encode())})
    modules = tree / "usr/lib/modules" / RELEASE
    report = check_running_system(
        system=FakeSystem(RELEASE, machine.files, machine.commands, modules)
    )
    assert report.finding("CONFIG_VETH").state is State.MISSING  # =m, but veth.ko is absent
