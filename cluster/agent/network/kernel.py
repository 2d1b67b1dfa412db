"""What the chosen backend needs from the kernel, checked once at the agent's start.

The kernel's config (``/proc/config.gz`` or ``/boot/config-<release>``, where ``k3py
check-config`` looks) must have each option built in (``=y``), or as a module (``=m``) that is
loaded (``/sys/module/<name>``) or present in ``/lib/modules/<release>`` (so that netlink can
load it on first use). A missing option stops the agent with one line naming it and pointing at
``k3py check-config``, instead of a netlink error at the first pod. When no config can be found
the check cannot tell and lets the agent go on (the first netlink call will say what fails).
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Callable
from pathlib import Path

from k3py.cluster.agent.errors import AgentError

# (config option, module name, what it is for)
COMMON = (
    ("BRIDGE", "bridge", "the cni0 bridge"),
    ("VETH", "veth", "the pods' veth pairs"),
    ("NF_TABLES", "nf_tables", "masquerade rules"),
    ("NFT_MASQ", "nft_masq", "masquerade rules"),
    ("NFT_NAT", "nft_nat", "masquerade rules"),
    ("BRIDGE_NETFILTER", "br_netfilter", "filtering bridged pod traffic"),
)
BY_BACKEND = {
    "vxlan": (*COMMON, ("VXLAN", "vxlan", "the vxlan backend")),
    "host-gw": COMMON,
    "none": (),
}


class KernelFeatureMissing(AgentError):
    """The kernel lacks an option the pod network needs."""


def _release() -> str:
    return os.uname().release


def _read_config(
    release: str, read: Callable[[str], bytes | None], wanted: set[str]
) -> dict[str, str] | None:
    """The ``wanted`` options' values (``CONFIG_`` omitted) from the first config found.

    Only the lines asked for are kept: a parsed config is about 10,000 entries, memory the
    long-running agent would keep for nothing.
    """
    candidates = (
        "/proc/config.gz",
        f"/boot/config-{release}",
        f"/usr/src/linux-{release}/.config",
        "/usr/src/linux/.config",
    )
    for candidate in candidates:
        data = read(candidate)
        if data is None:
            continue
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        # One search for the wanted lines, not a Python loop over all of them (an emulated
        # board spent a tenth of a second of its start on that loop).
        names = b"|".join(re.escape(name.encode()) for name in sorted(wanted))
        pattern = re.compile(rb"^CONFIG_(" + names + rb")=(.*)$", re.MULTILINE)
        return {
            name.decode(): value.decode(errors="replace").strip()
            for name, value in pattern.findall(data)
        }
    return None


def _read_file(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def _module_available(name: str, release: str) -> bool:
    if Path("/sys/module", name).exists():
        return True
    for base in ("/lib/modules", "/usr/lib/modules"):
        listing = _read_file(f"{base}/{release}/modules.dep")
        if listing is not None:
            text = listing.decode(errors="replace").replace("-", "_")
            return f"/{name}.ko" in text
    return False


def check_kernel(
    backend: str,
    *,
    release: str | None = None,
    read: Callable[[str], bytes | None] = _read_file,
    module_available: Callable[[str, str], bool] = _module_available,
) -> None:
    """Raise :class:`KernelFeatureMissing` for the first option ``backend`` needs and lacks."""
    needed = BY_BACKEND[backend]
    if not needed:
        return
    release = release or _release()
    config = _read_config(release, read, {option for option, _, _ in needed})
    if config is None:
        return
    for option, module, purpose in needed:
        value = config.get(option)
        if value == "y" or (value == "m" and module_available(module, release)):
            continue
        state = "a module that is not installed" if value == "m" else "not set"
        raise KernelFeatureMissing(
            f"the kernel lacks CONFIG_{option} ({state}), needed for {purpose} by "
            f"--flannel-backend {backend}; run 'k3py check-config' to see everything missing"
        )
