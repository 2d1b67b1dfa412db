"""The firmware artefact: what a board gets is exactly the firmware part of the k3py wheel built
from the tree's tracked files, and the wheel of a plain copy of the tree works.

The wheel is built by pip (build isolation: setuptools from the package index or pip's cache),
so these tests are in the image tier with the builds that use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from k3py.image import firmware
from tests.image.builds import built_image, firmware_snapshot

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SITE = "usr/lib/python3/dist-packages"
# Written at install time on the board, not taken from the wheel.
INSTALL_RECORDS = {"INSTALLER", "RECORD"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(tree: Path, target: Path) -> Path:
    """The tree's committed files, as a zip download or ``git archive`` gives them."""
    target.mkdir(parents=True)
    archive = target.parent / f"{target.name}.tar"
    subprocess.run(["git", "-C", str(tree), "archive", "-o", str(archive), "HEAD"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def test_image_firmware_is_the_wheels_firmware_and_nothing_else(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    built = built_image(request, tmp_path_factory, "qemu-virt-arm64", "agent")
    wheel = firmware_snapshot(request, tmp_path_factory)
    whole = json.loads(built.manifest.read_text())
    suites = {p["suite"] for group in whole["packages"].values() for p in group}
    assert suites <= {"trixie", "trixie-updates", "trixie-security"}
    assert "trixie" in suites
    manifest = whole["firmware"]
    assert manifest["sha256"] == _sha256(wheel)
    assert manifest["wheel"] == wheel.name

    with zipfile.ZipFile(wheel) as archive:
        in_wheel = archive.namelist()
    members = firmware.firmware_members(wheel)
    dist_info = [n for n in in_wheel if ".dist-info/" in n and n.split("/")[-1] != "RECORD"]
    assert sorted(manifest["files"]) == sorted([*members, *dist_info])

    site = built.work_dir / "rootfs" / SITE
    on_board = sorted(
        str(p.relative_to(site))
        for p in site.glob("k3py*/**/*")
        if p.is_file() and "__pycache__" not in p.parts and p.name not in INSTALL_RECORDS
    )
    assert on_board == sorted(manifest["files"])
    # The wheel also carries the build host's pipeline and the boards' data; boards get neither.
    assert any(n.startswith("k3py/image/") for n in in_wheel)
    assert not [f for f in on_board if f.startswith(("k3py/image/", "k3py/board/"))]
    for unwanted in ("generate.py", "protobuf_schema.py", "conftest.py", "test_"):
        assert not [f for f in on_board if unwanted in f.rsplit("/", 1)[-1]], unwanted
    assert not [f for f in on_board if f.startswith(("tools/", "tests/"))]


def test_an_untracked_file_never_reaches_the_wheel(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(tree)], check=True)
    (tree / "cluster/untracked_stray.py").write_text("SECRET = 1\n")
    (tree / "kernel-config/untracked.toml").write_text("x = 1\n")
    wheel = firmware.build_wheel(tree, tmp_path / "cache")
    names = zipfile.ZipFile(wheel).namelist()
    assert "k3py/cluster/api/names.py" in names
    assert not [n for n in names if "untracked" in n]


def test_a_plain_copy_of_the_tree_installs_and_passes_unit_tests(tmp_path: Path) -> None:
    # No .git, no links: as a zip download of the repository unpacks.
    plain = _export(REPO, tmp_path / "plain")
    assert not [p for p in plain.rglob("*") if p.is_symlink()]
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    subprocess.run([*pip, str(plain)], check=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert (site / "k3py/board/qemu-virt-arm64/board.toml").is_file()
    assert (site / "k3py/image/overlay/usr/lib/k3py/rcS").is_file()
    assert os.access(site / "k3py/image/overlay/usr/lib/k3py/rcS", os.X_OK)
    # The copy's tests, run away from its folders: only the installed package is importable.
    runner = tmp_path / "run"
    (runner / "tests").parent.mkdir()
    (plain / "tests").rename(runner / "tests")
    (plain / "pyproject.toml").rename(runner / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(site)}
    subset = ["tests/api", "tests/test_cli.py", "tests/image/test_boards.py",
              "tests/checkconfig/test_requirements.py", "tests/openapi/test_fields.py"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *subset],
        cwd=runner, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    located = subprocess.run(
        [sys.executable, "-c", "import k3py.cluster, k3py.board; print(k3py.cluster.__file__)"],
        cwd=runner, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert located.stdout.strip() == str(site / "k3py/cluster/__init__.py")
