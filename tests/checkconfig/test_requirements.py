"""The requirements data: the shipped file is valid and complete; bad data is refused by name."""

from __future__ import annotations

import pytest

from k3py.cluster.checkconfig.errors import RequirementsError
from k3py.cluster.checkconfig.fragment import required_fragment, shipped_required_fragment
from k3py.cluster.checkconfig.requirements import load_requirements, parse_requirements

# The "generally necessary" and "optional" options of K3s's contrib/util/check-config.sh and
# moby's contrib/check-config.sh (the vsyscall trio appears as the x86-only alternative).
K3S_AND_MOBY = """
NAMESPACES NET_NS PID_NS IPC_NS UTS_NS CGROUPS CGROUP_PIDS CGROUP_CPUACCT CGROUP_DEVICE
CGROUP_FREEZER CGROUP_SCHED CPUSETS MEMCG SECCOMP KEYS VETH BRIDGE BRIDGE_NETFILTER
IP_NF_FILTER IP_NF_TARGET_MASQUERADE IP_NF_TARGET_REJECT NETFILTER_XT_MATCH_ADDRTYPE
NETFILTER_XT_MATCH_CONNTRACK NETFILTER_XT_MATCH_IPVS NETFILTER_XT_MATCH_COMMENT
NETFILTER_XT_MATCH_MULTIPORT NETFILTER_XT_MATCH_STATISTIC IP_NF_NAT NF_NAT POSIX_MQUEUE
DEVPTS_MULTIPLE_INSTANCES USER_NS MEMCG_KMEM RESOURCE_COUNTERS NETPRIO_CGROUP CGROUP_NET_PRIO
BLK_CGROUP BLK_DEV_THROTTLING CGROUP_PERF CGROUP_HUGETLB NET_CLS_CGROUP CFS_BANDWIDTH
FAIR_GROUP_SCHED RT_GROUP_SCHED IP_NF_TARGET_REDIRECT IP_SET IP_VS IP_VS_NFCT IP_VS_PROTO_TCP
IP_VS_PROTO_UDP IP_VS_RR EXT4_FS EXT4_FS_POSIX_ACL EXT4_FS_SECURITY VXLAN CRYPTO CRYPTO_AEAD
CRYPTO_GCM CRYPTO_SEQIV CRYPTO_GHASH XFRM XFRM_USER XFRM_ALGO INET_ESP INET_XFRM_MODE_TRANSPORT
OVERLAY_FS IP_NF_MANGLE IP6_NF_FILTER IP6_NF_MANGLE IP6_NF_TARGET_MASQUERADE NETFILTER_XT_MARK
IP_NF_RAW IP6_NF_RAW IP6_NF_NAT NF_NAT_IPV4 NF_NAT_NEEDED CGROUP_BPF SECCOMP_FILTER MEMCG_SWAP
MEMCG_SWAP_ENABLED LEGACY_VSYSCALL_EMULATE IOSCHED_CFQ CFQ_GROUP_IOSCHED SECURITY_SELINUX
SECURITY_APPARMOR EXT3_FS EXT3_FS_XATTR EXT3_FS_POSIX_ACL EXT3_FS_SECURITY
BRIDGE_VLAN_FILTERING NETFILTER_XT_MATCH_BPF IPVLAN MACVLAN DUMMY NF_NAT_FTP NF_CONNTRACK_FTP
NF_NAT_TFTP NF_CONNTRACK_TFTP BTRFS_FS BTRFS_FS_POSIX_ACL
""".split()  # noqa: SIM905 - a word list reads better as text

ISSUE_GROUPS = (
    "namespaces",
    "cgroups",
    "netfilter",
    "iptables",
    "nftables",
    "bridge",
    "vxlan",
    "ipvs",
    "overlayfs",
    "seccomp",
    "storage",
)


def test_shipped_requirements_cover_k3s_and_moby_in_the_named_groups() -> None:
    requirements = load_requirements()
    covered = {c.config for g in requirements.groups for r in g.requirements for c in r.choices}
    assert set(K3S_AND_MOBY) - covered == set()
    assert set(ISSUE_GROUPS) <= set(requirements.names())
    by_name = {g.name: g for g in requirements.groups}
    assert by_name["namespaces"].required
    assert not by_name["vxlan"].required
    assert not by_name["ipvs"].required


def test_version_conditions_of_the_shipped_data() -> None:
    options = {
        c.config: r
        for g in load_requirements().groups
        for r in g.requirements
        for c in r.choices
        if len(r.choices) == 1
    }
    nat_ipv4 = options["NF_NAT_IPV4"]
    assert nat_ipv4.applies((5, 1), "arm64") is True
    assert nat_ipv4.applies((5, 2), "arm64") is False
    cgroup_bpf = options["CGROUP_BPF"]
    assert cgroup_bpf.applies((4, 14), "arm") is False
    assert cgroup_bpf.applies((4, 15), "arm") is True
    assert cgroup_bpf.applies(None, "arm") is None  # unknown version: not judged
    assert options["VXLAN"].choices[0].modules == ("vxlan",)
    assert options["IP_VS"].choices[0].modules == ("ip_vs",)
    assert options["OVERLAY_FS"].choices[0].modules == ("overlay",)


def test_shipped_fragment_is_every_required_option_as_y() -> None:
    shipped = shipped_required_fragment()
    assert shipped == required_fragment(load_requirements()), (
        "kernel-config/k3py-required.config is stale: regenerate it with "
        "python -m k3py.cluster.checkconfig.fragment > kernel-config/k3py-required.config"
    )
    lines = {line for line in shipped.splitlines() if line.startswith("CONFIG_")}
    assert {"CONFIG_MEMCG=y", "CONFIG_NAMESPACES=y", "CONFIG_BRIDGE_NETFILTER=y"} <= lines
    assert "CONFIG_NF_NAT_IPV4=y" not in lines  # gone from current kernels
    assert "CONFIG_VXLAN=y" not in lines  # optional unless required


GOOD_OPTION = '[[groups.g.options]]\nconfig = "X"\nreason = "why"\n'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[groups.g]\nrequired = true\nsumary = "s"\n' + GOOD_OPTION, "groups.g.sumary"),
        ('[groups.g]\nrequired = "yes"\nsummary = "s"\n' + GOOD_OPTION, "groups.g.required"),
        (
            '[groups.g]\nrequired = true\nsummary = "s"\n'
            '[[groups.g.options]]\nconfig = "CONFIG_X"\nreason = "r"\n',
            "groups.g.options[0].config",
        ),
        (
            '[groups.g]\nrequired = true\nsummary = "s"\n'
            '[[groups.g.options]]\nconfig = "X"\nreason = "r"\nuntil = "5"\n',
            "groups.g.options[0].until",
        ),
        (
            '[groups.g]\nrequired = true\nsummary = "s"\n'
            '[[groups.g.options]]\nconfig = "X"\nany_of = [{config = "A"}, {config = "B"}]\n'
            'reason = "r"\n',
            "groups.g.options[0]",
        ),
        (
            '[groups.g]\nrequired = true\nsummary = "s"\n' + GOOD_OPTION + GOOD_OPTION,
            "groups.g.options[1]",
        ),
        (
            '[groups.g]\nrequired = true\nsummary = "s"\n'
            '[[groups.g.options]]\nconfig = "X"\nreason = "r"\narch = ["sparc64"]\n',
            "groups.g.options[0].arch",
        ),
        ('[groups.g]\nrequired = true\nsummary = "s"\n', "groups.g.options"),
        ("[groups.g\n", "(syntax)"),
    ],
)
def test_bad_requirements_name_the_file_and_the_key(text: str, where: str) -> None:
    with pytest.raises(RequirementsError) as raised:
        parse_requirements(text, "broken.toml")
    assert str(raised.value).startswith(f"broken.toml: {where}:")
    assert raised.value.exit_code == 78
