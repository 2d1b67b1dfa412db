"""``k3py image build --ota-key``: the key lands in the root slot; a wrong file is refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from k3py.cli import main
from k3py.cluster.ota import bundle
from k3py.image import pipeline, rootfs
from k3py.image.ota import bundler


def test_a_file_that_is_no_public_key_is_refused_before_the_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "key.pub"
    bad.write_text("not a key\n")
    argv = ["image", "build", "--board", "qemu-virt-arm64", "--role", "agent",
            "--cache-dir", str(tmp_path / "cache"), "--ota-key", str(bad)]  # fmt: skip
    assert main(argv) == 64
    assert f"--ota-key {bad}: the update key {bad} is unreadable" in capsys.readouterr().err


def test_the_key_is_baked_into_the_root_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    monkeypatch.setattr(rootfs, "configure", lambda *a, **k: None)
    root = tmp_path / "root"
    board = SimpleNamespace(console="ttyAMA0", architecture="arm64", name="qemu-virt-arm64")
    content = SimpleNamespace(applets=(), alternatives={}, boot_modules=())
    settings = SimpleNamespace(role="agent", board=board, content=content, overlay=None,
                               ota_key=tmp_path / "k.pub")  # fmt: skip
    pipeline.configure_rootfs(SimpleNamespace(rootfs=root, settings=settings))  # type: ignore[arg-type]
    baked = root / str(bundle.IMAGE_KEY_PATH).lstrip("/")
    assert baked.read_bytes() == (tmp_path / "k.pub").read_bytes()
    assert bundle.key_id(bundle.load_public_key(baked)) == bundle.key_id(
        bundle.load_public_key(tmp_path / "k.pub")
    )
