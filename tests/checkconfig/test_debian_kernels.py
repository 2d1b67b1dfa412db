"""Debian stable's ARM kernels, downloaded from Debian's archive: what images will be built on.

Both ``linux-image-arm64`` and ``linux-image-armmp-lpae`` must pass with ``--require vxlan,ipvs``
with VXLAN and IP_VS found as modules; with ``vxlan.ko*`` deleted (from a hard-link copy, never
from the cache) the check must fail naming CONFIG_VXLAN and how to fix it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k3py.cluster.checkconfig import State, check_kernel_dir
from tests.checkconfig import debian_kernels
from tests.checkconfig.debian_kernels import UnpackedKernel

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

FLAVOURS = {"arm64": "arm64", "armmp-lpae": "armhf"}


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def debian_kernel(request: pytest.FixtureRequest) -> UnpackedKernel:
    flavour: str = request.param
    return debian_kernels.fetch(flavour, FLAVOURS[flavour])


def k3py(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k3py", "check-config", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_resolved_through_the_metapackage(debian_kernel: UnpackedKernel) -> None:
    assert debian_kernel.package.startswith("linux-image-6.")
    assert (debian_kernel.root / "boot" / f"config-{debian_kernel.release}").is_file()


def test_passes_with_vxlan_and_ipvs_as_modules_found(debian_kernel: UnpackedKernel) -> None:
    done = k3py("--kernel-dir", str(debian_kernel.root), "--require", "vxlan,ipvs")
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "STATUS: pass"
    report = check_kernel_dir(debian_kernel.root, {"vxlan", "ipvs"})
    assert report.release == debian_kernel.release
    assert report.version == (6, 12)
    vxlan = report.finding("CONFIG_VXLAN")
    assert vxlan.state is State.MODULE
    assert vxlan.detail == "vxlan (kernel/drivers/net/vxlan/vxlan.ko.xz)"
    ip_vs = report.finding("CONFIG_IP_VS")
    assert ip_vs.state is State.MODULE
    assert ip_vs.detail == "ip_vs (kernel/net/netfilter/ipvs/ip_vs.ko.xz)"
    # Every =m option the data names was checked against a real module file.
    unverified = [f.name for f in report.findings() if "not verified" in f.detail]
    assert unverified == []
    assert report.failures == 0


def test_deleting_vxlan_fails_naming_it(debian_kernel: UnpackedKernel, tmp_path: Path) -> None:
    copy = tmp_path / "kernel"
    debian_kernels.hardlink_farm(debian_kernel.root, copy)
    deleted = list(copy.rglob("vxlan.ko*"))
    assert deleted
    for module in deleted:
        module.unlink()
    done = k3py("--kernel-dir", str(copy), "--require", "vxlan,ipvs")
    assert done.returncode == 1
    row = next(line for line in done.stdout.splitlines() if "CONFIG_VXLAN " in line)
    assert "missing" in row
    assert "=m, but module vxlan is not in" in row
    assert "keep vxlan.ko* in the image, or build it in: CONFIG_VXLAN=y" in done.stdout
    assert done.stdout.splitlines()[-1] == "STATUS: 1 failures"
    fragment = k3py("--kernel-dir", str(copy), "--require", "vxlan", "--missing-fragment")
    assert "CONFIG_VXLAN=y" in fragment.stdout.splitlines()
    as_json = json.loads(k3py("--kernel-dir", str(copy), "--require", "vxlan", "--json").stdout)
    assert as_json["failures"] == 1
    # The cache keeps its module: only the copy lost it.
    assert list(debian_kernel.root.rglob("vxlan.ko*"))
