"""Judging synthetic kernels: required vs optional, --require, versions, alternatives, modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3py.cluster.checkconfig import Report, State, check_config_file, check_kernel_dir
from k3py.cluster.checkconfig.errors import CheckConfigError, UnknownGroupError
from k3py.cluster.checkconfig.render import missing_fragment, table
from k3py.cluster.checkconfig.requirements import parse_requirements
from k3py.cluster.checkconfig.system import FakeSystem
from tests.checkconfig.helpers import kernel_tree, required_values, write_config

# Not the running kernel: no /proc/config.gz to match, so no running-system checks.
ELSEWHERE = FakeSystem(release="0.0-elsewhere")


def _check(
    tmp_path: Path,
    values: dict[str, str],
    *require: str,
    version: str | None = "6.12.38",
    arch: str = "arm64",
) -> Report:
    path = write_config(tmp_path / "config", values, version=version, arch=arch)
    return check_config_file(path, require, system=ELSEWHERE)


def test_complete_kernel_passes_and_optional_gaps_only_warn(tmp_path: Path) -> None:
    report = _check(tmp_path, required_values())
    assert report.failures == 0
    assert report.exit_code == 0
    assert report.status == "pass"
    assert report.finding("CONFIG_VXLAN").state is State.WARNING
    assert "system" not in [g.name for g in report.groups]


def test_not_set_required_option_is_a_failure_with_a_fix(tmp_path: Path) -> None:
    values = required_values() | {"MEMCG": "n", "BRIDGE": "m"}
    report = _check(tmp_path, values)
    memcg = report.finding("CONFIG_MEMCG")
    assert memcg.state is State.MISSING
    assert "not set" in memcg.detail
    assert "CONFIG_MEMCG=y" in memcg.hint
    assert report.finding("CONFIG_BRIDGE").state is State.MODULE
    assert report.failures == 1
    assert report.exit_code == 1
    assert report.status == "1 failures"
    assert missing_fragment(report).splitlines()[1:] == ["CONFIG_MEMCG=y"]


def test_require_turns_optional_groups_into_failures(tmp_path: Path) -> None:
    values = required_values() | {"VXLAN": "y"}
    report = _check(tmp_path, values, "vxlan", "ipvs")
    assert report.finding("CONFIG_VXLAN").state is State.ENABLED
    assert report.finding("CONFIG_IP_VS").state is State.MISSING
    assert report.failures == 9  # the ipvs group
    assert "ipvs" in report.required_groups
    with pytest.raises(UnknownGroupError, match="vxlna") as raised:
        _check(tmp_path, values, "vxlna")
    assert raised.value.exit_code == 64


def test_version_conditions(tmp_path: Path) -> None:
    values = required_values()
    del values["CGROUP_BPF"]
    # 5.1: NF_NAT_IPV4 and NF_NAT_NEEDED still exist and are required; CGROUP_BPF too (>= 4.15).
    old = _check(tmp_path, values, version="5.1.21")
    assert {f.name for f in old.findings() if f.failure} == {
        "CONFIG_NF_NAT_IPV4",
        "CONFIG_NF_NAT_NEEDED",
        "CONFIG_CGROUP_BPF",
    }
    # 5.2: NF_NAT_IPV4 is gone, NF_NAT_NEEDED lasts up to 5.2.
    mid = _check(tmp_path, values, version="5.2.0")
    assert {f.name for f in mid.findings() if f.failure} == {
        "CONFIG_NF_NAT_NEEDED",
        "CONFIG_CGROUP_BPF",
    }
    # 4.14: before CGROUP_BPF; DEVPTS_MULTIPLE_INSTANCES no longer needed after 4.7.
    older = _check(tmp_path, values | {"NF_NAT_IPV4": "m", "NF_NAT_NEEDED": "y"}, version="4.14.1")
    assert older.failures == 0
    names = {f.name for f in older.findings()}
    assert "CONFIG_CGROUP_BPF" not in names
    assert "CONFIG_DEVPTS_MULTIPLE_INSTANCES" not in names


def test_unknown_version_leaves_conditional_options_as_warnings(tmp_path: Path) -> None:
    report = _check(tmp_path, required_values(), version=None)
    bpf = report.finding("CONFIG_CGROUP_BPF")
    assert bpf.state is State.WARNING
    assert "version is unknown" in bpf.detail
    assert report.failures == 0


def test_alternatives_need_one_of_them(tmp_path: Path) -> None:
    label = "CONFIG_OVERLAY_FS | CONFIG_BTRFS_FS"
    values = required_values() | {"OVERLAY_FS": "n", "BTRFS_FS": "y"}
    either = _check(tmp_path, values).finding(label)
    assert either.state is State.ENABLED
    assert "CONFIG_BTRFS_FS=y" in either.detail
    neither = _check(tmp_path, values | {"BTRFS_FS": "n"}).finding(label)
    assert neither.state is State.MISSING
    assert neither.hint == "set one of CONFIG_OVERLAY_FS=y, CONFIG_BTRFS_FS=y"


def test_arch_conditions(tmp_path: Path) -> None:
    x86 = _check(tmp_path, required_values() | {"LEGACY_VSYSCALL_NONE": "y"}, arch="x86")
    vsyscall = x86.finding("CONFIG_LEGACY_VSYSCALL_XONLY | CONFIG_LEGACY_VSYSCALL_EMULATE")
    assert vsyscall.state is State.WARNING
    arm = _check(tmp_path, required_values(), arch="arm")
    assert all("VSYSCALL" not in f.name for f in arm.findings())


def test_exit_code_is_capped_at_63(tmp_path: Path) -> None:
    options = "".join(
        f'[[groups.many.options]]\nconfig = "OPT_{i}"\nreason = "r"\n' for i in range(70)
    )
    requirements = parse_requirements(
        f'[groups.many]\nrequired = true\nsummary = "s"\n{options}', "many.toml"
    )
    path = write_config(tmp_path / "config", {"OTHER": "y"})
    report = check_config_file(path, system=ELSEWHERE, requirements=requirements)
    assert report.failures == 70
    assert report.exit_code == 63
    assert report.status == "70 failures"


VXLAN = "kernel/drivers/net/vxlan/vxlan.ko"


@pytest.mark.parametrize("suffix", ["", ".xz", ".zst"])
def test_kernel_dir_module_found_by_file(tmp_path: Path, suffix: str) -> None:
    root = kernel_tree(tmp_path, required_values() | {"VXLAN": "m"}, module_files=(VXLAN + suffix,))
    report = check_kernel_dir(root, {"vxlan"})
    vxlan = report.finding("CONFIG_VXLAN")
    assert vxlan.state is State.MODULE
    assert vxlan.detail == f"vxlan ({VXLAN}{suffix})"
    assert report.failures == 0


def test_kernel_dir_builtin_and_dash_underscore_names(tmp_path: Path) -> None:
    values = required_values() | {"BRIDGE_NETFILTER": "m", "VETH": "m"}
    root = kernel_tree(
        tmp_path,
        values,
        builtin=("kernel/net/bridge/br_netfilter.ko",),
        module_files=("kernel/drivers/net/veth.ko.xz",),
        usr_merged=False,
    )
    report = check_kernel_dir(root)
    assert report.finding("CONFIG_BRIDGE_NETFILTER").detail == "br_netfilter (built in)"
    assert report.finding("CONFIG_VETH").state is State.MODULE
    assert report.modules.endswith("lib/modules/6.12.38-test")


def test_kernel_dir_pruned_module_fails_with_a_hint(tmp_path: Path) -> None:
    values = required_values() | {"VXLAN": "m"}
    root = kernel_tree(tmp_path, values, order=(VXLAN,))
    report = check_kernel_dir(root, ["vxlan"])
    vxlan = report.finding("CONFIG_VXLAN")
    assert vxlan.state is State.MISSING
    assert "=m, but module vxlan is not in" in vxlan.detail
    assert "pruned" in vxlan.detail
    assert vxlan.hint == "keep vxlan.ko* in the image, or build it in: CONFIG_VXLAN=y"
    assert report.exit_code == 1
    assert "CONFIG_VXLAN=y" in missing_fragment(report).splitlines()
    assert table(report).splitlines()[-1] == "STATUS: 1 failures"
    # Not required: the same gap is a warning.
    assert check_kernel_dir(root).finding("CONFIG_VXLAN").state is State.WARNING


def test_kernel_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckConfigError, match="not a directory") as missing:
        check_kernel_dir(tmp_path / "absent")
    assert missing.value.exit_code == 66
    with pytest.raises(CheckConfigError, match="no .*/boot/config-<release>") as empty:
        check_kernel_dir(tmp_path)
    assert empty.value.exit_code == 66
    kernel_tree(tmp_path, required_values(), release="6.1.0-a")
    kernel_tree(tmp_path, required_values(), release="6.12.0-b")
    with pytest.raises(CheckConfigError, match="several kernels") as several:
        check_kernel_dir(tmp_path)
    assert several.value.exit_code == 64
    assert check_kernel_dir(tmp_path, release="6.1.0-a").release == "6.1.0-a"
    (tmp_path / "boot" / "config-6.12.0-b").write_text("not a config\n")
    with pytest.raises(CheckConfigError) as garbage:
        check_kernel_dir(tmp_path, release="6.12.0-b")
    assert garbage.value.exit_code == 65


def test_kernel_dir_without_modules_fails_every_module(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    write_config(tmp_path / "boot" / "config-6.12.0-bare", required_values() | {"BRIDGE": "m"})
    report = check_kernel_dir(tmp_path)
    assert report.modules.endswith("lib/modules/6.12.0-bare does not exist: every =m option fails")
    assert report.finding("CONFIG_BRIDGE").state is State.MISSING
    assert report.failures == 1
