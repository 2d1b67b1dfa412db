"""Bundles: what a board refuses before it changes anything, and what it accepts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from k3py.cli import main
from k3py.cluster.ota import bundle
from k3py.cluster.ota.bundle import BundleError, Running
from k3py.image.ota import bundler

BOARD = Running(version="0.1.0", architecture="arm64", board="qemu-virt-arm64")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "ota-key.pem", tmp_path / "ota-key.pub"
    bundler.keygen(private, public)
    return private, public


def _wheel(tmp_path: Path, version: str = "0.2.0") -> Path:
    wheel = tmp_path / f"k3py-{version}-py3-none-any.whl"
    wheel.write_bytes(b"PK" + bytes(range(256)) * 64)
    return wheel


def _firmware(tmp_path: Path, keys: tuple[Path, Path], **kwargs: object) -> Path:
    out = tmp_path / "fw.k3pyb"
    key = bundler.load_private_key(keys[0])
    version = str(kwargs.pop("version", "0.2.0"))
    boards = kwargs.pop("boards", [])
    minimum = kwargs.pop("minimum_version", None)
    bundler.firmware_bundle(out, key, _wheel(tmp_path, version), boards=boards,  # type: ignore[arg-type]
                            minimum_version=minimum)  # type: ignore[arg-type]  # fmt: skip
    return out


def test_a_signed_firmware_bundle_verifies(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = _firmware(tmp_path, keys)
    manifest = bundle.verify(path, bundle.load_public_key(keys[1]), BOARD, kind="firmware")
    assert (manifest.kind, manifest.version, manifest.architecture) == ("firmware", "0.2.0", "any")
    wheel = manifest.payload("wheel")
    assert wheel.name == "k3py-0.2.0-py3-none-any.whl"
    assert len(wheel.sha256) == 64


def test_bundles_are_reproducible(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    first = _firmware(tmp_path, keys).read_bytes()
    assert _firmware(tmp_path, keys).read_bytes() == first  # Ed25519 signs deterministically


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_payload_byte_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = _firmware(tmp_path, keys)
    member = bundle.members(path)["k3py-0.2.0-py3-none-any.whl"]
    _flip(path, member.offset + 1000)
    with pytest.raises(BundleError, match="does not match its SHA-256"):
        bundle.verify(path, bundle.load_public_key(keys[1]), BOARD)


def test_a_tampered_manifest_byte_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = _firmware(tmp_path, keys)
    member = bundle.members(path)[bundle.MANIFEST]
    raw = path.read_bytes()[member.offset : member.offset + member.size]
    _flip(path, member.offset + raw.index(b"0.2.0"))  # "0.2.0" becomes "1.2.0"
    with pytest.raises(BundleError, match="signature does not match"):
        bundle.verify(path, bundle.load_public_key(keys[1]), BOARD)


def test_another_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = _firmware(tmp_path, keys)
    other = tmp_path / "other"
    other.mkdir()
    bundler.keygen(other / "k.pem", other / "k.pub")
    with pytest.raises(BundleError, match="signed with another key"):
        bundle.verify(path, bundle.load_public_key(other / "k.pub"), BOARD)


@pytest.mark.parametrize("keep", [100, 1536, None])
def test_a_truncated_bundle_is_refused(
    tmp_path: Path, keys: tuple[Path, Path], keep: int | None
) -> None:
    path = _firmware(tmp_path, keys)
    if keep is None:  # in the middle of the payload
        keep = bundle.members(path)["k3py-0.2.0-py3-none-any.whl"].offset + 500
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(BundleError, match="truncated|no signed manifest|not a bundle"):
        bundle.verify(path, bundle.load_public_key(keys[1]), BOARD)


def test_a_board_below_the_minimum_version_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    path = _firmware(tmp_path, keys, minimum_version="0.1.5")
    with pytest.raises(BundleError, match=r"needs at least version 0\.1\.5 running"):
        bundle.verify(path, bundle.load_public_key(keys[1]), BOARD)
    newer = Running("0.1.10", "arm64", "qemu-virt-arm64")  # 0.1.10 > 0.1.5, numerically
    bundle.verify(path, bundle.load_public_key(keys[1]), newer)


def test_a_downgrade_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = _firmware(tmp_path, keys, version="0.0.9")
    with pytest.raises(BundleError, match="older than the running 0.1.0"):
        bundle.verify(path, bundle.load_public_key(keys[1]), BOARD)


def test_another_board_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    path = _firmware(tmp_path, keys, boards=["rpi4"])
    with pytest.raises(BundleError, match="for boards rpi4; this one is qemu-virt-arm64"):
        bundle.verify(path, bundle.load_public_key(keys[1]), BOARD)


def test_a_system_without_a_key_refuses_every_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="built without 'k3py image build --ota-key'"):
        bundle.load_public_key(tmp_path / "absent.pub")


def _image(tmp_path: Path, board: str = "qemu-virt-arm64", arch: str = "arm64") -> Path:
    """A small disk image whose build manifest places slot A at 1 MiB."""
    image = tmp_path / f"{board}-agent.img"
    slot = b"".join(bytes([n % 251]) * 65536 for n in range(20)) + b"tail"
    image.write_bytes(b"\0" * 1048576 + slot + b"\0" * 4096)
    facts = {"board": board, "role": "agent", "architecture": arch, "k3py_version": "0.2.0",
             "sha256": "x", "partitions": [{"name": "rootA", "start": 1048576,
                                            "size": len(slot)}]}  # fmt: skip
    (tmp_path / f"{board}-agent.manifest.json").write_text(json.dumps(facts))
    return image


def test_a_system_bundle_carries_slot_a_and_its_index(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    image = _image(tmp_path)
    out = tmp_path / "sys.k3pyb"
    bundler.system_bundle(out, bundler.load_private_key(keys[0]), image, minimum_version=None)
    manifest = bundle.verify(out, bundle.load_public_key(keys[1]), BOARD, kind="system")
    assert manifest.compatible == ("qemu-virt-arm64",)
    slot = manifest.payload("slot")
    assert slot.size == 20 * 65536 + 4
    assert slot.block_size == 65536
    assert manifest.payload("index").size == 21 * 32
    with pytest.raises(BundleError, match="a system bundle was given where a firmware"):
        bundle.verify(out, bundle.load_public_key(keys[1]), BOARD, kind="firmware")


def test_another_architecture_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    image = _image(tmp_path, board="qemu-virt-armv7", arch="armhf")
    out = tmp_path / "sys.k3pyb"
    bundler.system_bundle(out, bundler.load_private_key(keys[0]), image, minimum_version=None)
    arm64 = Running("0.1.0", "arm64", "qemu-virt-armv7")
    with pytest.raises(BundleError, match="for armhf; this system is arm64"):
        bundle.verify(out, bundle.load_public_key(keys[1]), arm64)


def test_cli_keygen_bundle_inspect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ota", "keygen"]) == 0
    assert (tmp_path / "ota-key.pem").stat().st_mode & 0o077 == 0
    assert main(["ota", "keygen"]) == 1  # never overwrites a key
    image = _image(tmp_path)
    assert main(["ota", "bundle", "--from", str(image), "-o", "s.k3pyb"]) == 0
    assert main(["ota", "inspect", "s.k3pyb"]) == 0
    out = capsys.readouterr().out
    assert '"kind": "system"' in out
    assert "signature: good" in out
    with tarfile.open(tmp_path / "s.k3pyb") as archive:
        assert archive.getnames()[:2] == [bundle.MANIFEST, bundle.SIGNATURE]
    _flip(tmp_path / "s.k3pyb", bundle.members(tmp_path / "s.k3pyb")["rootfs.img"].offset)
    assert main(["ota", "inspect", "s.k3pyb"]) == 1
    assert "does not match its SHA-256" in capsys.readouterr().err
