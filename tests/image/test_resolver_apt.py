"""The image builder's resolver against apt itself, on the same signed indices.

apt runs with a scratch configuration (its own root, an empty dpkg status, the board's
architecture only) whose sources are the build's package cache, laid out as the mirror is
(``file:`` sources over ``dists/<suite>/…``), so both answer the same question from the same
files: which packages, at which versions, does installing a role's package set take? The
appliance's ``exclude`` list is apt-unaware, so both resolve without it. Any difference fails
with both answers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from k3py.image import debian
from k3py.image.content import load_content
from tests.image.builds import cache_dir

pytestmark = [pytest.mark.image, pytest.mark.timeout(600)]

_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ")


def _apt_config(root: Path, archive: debian.DebianArchive, architecture: str) -> Path:
    for directory in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                      "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):  # fmt: skip
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "status").write_text("")
    components = " ".join(archive.components)
    (root / "etc/apt/sources.list").write_text(
        "".join(
            f"deb [arch={architecture} signed-by={archive.keyring}] "
            f"file:{archive.cache_dir} {suite} {components}\n"
            for suite in archive.suites
        )
    )
    config = root / "apt.conf"
    config.write_text(
        f'Dir "{root}/";\n'
        f'Dir::State::status "{root}/status";\n'
        f'Dir::Etc::Parts "{root}/etc/apt/apt.conf.d";\n'
        f'APT::Architecture "{architecture}";\n'
        f'APT::Architectures {{ "{architecture}"; }};\n'
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
        'Acquire::Languages "none";\nAcquire::By-Hash "no";\n'
        'Acquire::Check-Valid-Until "false";\nAcquire::IndexTargets::deb::Contents-deb "";\n'
        'Debug::NoLocking "true";\nAPT::Sandbox::User "root";\n'
    )
    return config


def apt_answer(
    archive: debian.DebianArchive, architecture: str, wanted: list[str], root: Path
) -> dict[str, str]:
    """What ``apt-get install --simulate`` would install: name → version."""
    env = {"APT_CONFIG": str(_apt_config(root, archive, architecture)), "LC_ALL": "C.UTF-8",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # fmt: skip
    update = subprocess.run(
        ["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=False
    )
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W: " not in update.stdout + update.stderr, update.stdout + update.stderr
    result = subprocess.run(
        ["apt-get", "install", "--simulate", "-q", *wanted],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    found = (_INST.match(line) for line in result.stdout.splitlines())
    return {m.group(1): m.group(2) for m in found if m}


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (a Debian host)")
@pytest.mark.parametrize("architecture", ["arm64", "armhf"])
@pytest.mark.parametrize("role", ["agent", "server"])
def test_resolver_installs_what_apt_installs(architecture: str, role: str, tmp_path: Path) -> None:
    archive = debian.DebianArchive(cache_dir())
    index = archive.index(architecture)  # fetches and verifies the indices apt then reads
    wanted = load_content().packages_for(role)
    ours = {p.name: p.version for p in index.resolve(wanted)}
    apts = apt_answer(archive, architecture, wanted, tmp_path / "apt")
    only_ours = {n: v for n, v in ours.items() if apts.get(n) != v}
    only_apts = {n: v for n, v in apts.items() if ours.get(n) != v}
    assert (only_ours, only_apts) == ({}, {}), (
        f"the resolver and apt differ for {role} on {architecture}:\n"
        f"  resolver only: {sorted(only_ours.items())}\n  apt only: {sorted(only_apts.items())}"
    )
