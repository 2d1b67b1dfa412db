"""Board descriptions: every shipped board loads, and mistakes name the file and the key."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from k3py.image.board import BOARDS_DIR, available_boards, load_board
from k3py.image.content import load_content
from k3py.image.errors import BoardError


def test_the_four_boards_load_with_their_architecture_and_boot_method() -> None:
    assert {"qemu-virt-arm64", "qemu-virt-armv7", "rpi4-arm64", "rpi3-armv7"} <= set(
        available_boards()
    )
    expected = {
        "qemu-virt-arm64": ("arm64", "u-boot"),
        "qemu-virt-armv7": ("armhf", "u-boot"),
        "rpi4-arm64": ("arm64", "u-boot"),
        "rpi3-armv7": ("armhf", "u-boot"),
    }
    for name, (architecture, method) in expected.items():
        board = load_board(name)
        assert (board.architecture, board.boot.method) == (architecture, method)
        assert (board.directory / "README.md").is_file()
    assert load_board("qemu-virt-arm64").qemu is not None
    for pi in ("rpi4-arm64", "rpi3-armv7"):
        assert "cgroup_enable=memory cgroup_memory=1" in load_board(pi).kernel.cmdline
        boot = load_board(pi).boot
        assert (boot.device, boot.loader_package, boot.fdt) == (
            "mmc 0",
            "u-boot-rpi",
            "${fdt_addr}",
        )


@pytest.fixture
def board_copy(tmp_path: Path) -> Path:
    target = tmp_path / "qemu-virt-arm64"
    shutil.copytree(BOARDS_DIR / "qemu-virt-arm64", target)
    return target / "board.toml"


def test_an_unknown_key_is_named_with_its_file(board_copy: Path) -> None:
    board_copy.write_text(board_copy.read_text().replace("[kernel]", "[kernel]\nmodule = []"))
    with pytest.raises(BoardError) as err:
        load_board(board_copy)
    assert str(board_copy) in str(err.value)
    assert "'kernel.module'" in str(err.value)


def test_u_boot_files_without_their_package_name_the_key(board_copy: Path) -> None:
    board_copy.write_text(
        board_copy.read_text().replace("[boot]", '[boot]\nloader_files = { "u-boot.bin" = "x" }')
    )
    with pytest.raises(BoardError, match=r"key 'boot\.loader_package'"):
        load_board(board_copy)


def test_a_wrong_architecture_names_the_key(board_copy: Path) -> None:
    board_copy.write_text(board_copy.read_text().replace('"arm64"', '"riscv64"', 1))
    with pytest.raises(BoardError, match=r"key 'board\.architecture'.*riscv64"):
        load_board(board_copy)


def test_a_missing_partition_template_is_reported(board_copy: Path) -> None:
    (board_copy.parent / "partitions.sfdisk.j2").unlink()
    with pytest.raises(BoardError, match=r"key 'partitions\.template'"):
        load_board(board_copy)


def test_a_wrong_type_names_the_key(board_copy: Path) -> None:
    board_copy.write_text(board_copy.read_text().replace("boot_mib = 64", 'boot_mib = "64"'))
    with pytest.raises(BoardError, match=r"key 'partitions\.boot_mib': expected an integer"):
        load_board(board_copy)


def test_an_unknown_board_lists_the_known_ones() -> None:
    with pytest.raises(BoardError, match="known boards: .*qemu-virt-arm64"):
        load_board("no-such-board")


def test_content_lists_roles_and_the_modules_the_kernel_gate_requires() -> None:
    content = load_content()
    # Both roles run workloads (the server runs its node's agent), so both carry the runtime
    # and what the pod network and the service proxy program (nftables).
    for role in ("agent", "server"):
        assert {"docker.io", "nftables", "python3-pyroute2"} <= set(content.packages_for(role))
    pod_network = {"vxlan", "bridge", "veth", "br_netfilter", "overlay", "nf_conntrack", "nf_nat"}
    nft = {"nf_tables", "nft_chain_nat", "nft_nat", "nft_masq", "nft_ct", "nft_numgen"}
    assert pod_network | nft | {"ip_vs"} <= set(content.required_modules)
    assert set(content.required_modules) <= set(content.kernel_modules)
    assert pod_network | nft <= set(content.boot_modules)


# PyPI names whose Debian package is not python3-<name>; dependencies only a server imports.
DEBIAN_NAMES = {"pyyaml": "python3-yaml"}
SERVER_ONLY = {"asyncpg"}


def test_every_firmware_dependency_is_in_the_images_content_lists() -> None:
    """The board's Python imports what the image carries: each of pyproject's dependencies
    (pinned to Debian 13's python3-* versions) is a package of the roles that import it."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    content = load_content()
    for requirement in pyproject["project"]["dependencies"]:
        name = re.split(r"[=<>!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        package = DEBIAN_NAMES.get(name, f"python3-{name}")
        roles = ("server",) if name in SERVER_ONLY else ("server", "agent")
        for role in roles:
            assert package in content.packages_for(role), f"{requirement}: {package} ({role})"


def test_cli_reports_an_unknown_board_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from k3py.cli import main

    code = main(["image", "build", "--board", "nope", "--role", "agent",
                 "--cache-dir", str(tmp_path / "cache")])  # fmt: skip
    assert code == 65
    err = capsys.readouterr().err.strip()
    assert err.startswith("k3py: error: no board description at ")
    assert "known boards: qemu-virt-arm64" in err
    assert "\n" not in err
