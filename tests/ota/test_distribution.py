"""Bundles on the server: admins push them, nodes download them with resume and by block."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from k3py.cli import main
from k3py.cluster.ota import blocks, bundle, download
from k3py.image.ota import bundler
from tests.ota.test_bundle import _image
from tests.server.conftest import (
    Api,
)

BOARD = bundle.Running("0.1.0", "arm64", "qemu-virt-arm64")


@pytest.fixture
def system(tmp_path: Path) -> tuple[Path, Path]:
    """A signed system bundle (and the public key)."""
    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    out = tmp_path / "system.k3pyb"
    key = bundler.load_private_key(tmp_path / "k.pem")
    bundler.system_bundle(out, key, _image(tmp_path), minimum_version=None)
    return out, tmp_path / "k.pub"


def _session(api: Api, token: str) -> aiohttp.ClientSession:
    base = str(api.client.make_url("/"))
    return aiohttp.ClientSession(base, headers={"Authorization": f"Bearer {token}"})


async def test_admins_store_bundles_and_nodes_read_them(
    api: Api, system: tuple[Path, Path], tmp_path: Path
) -> None:
    data = system[0].read_bytes()
    path = "/ota/v1/bundles/system-0.2.0.k3pyb"
    for token in ("jane", "node1"):
        refused = await api.put(path, data=data, token=token, content_type="application/x-tar")
        assert refused.status == 403
    stored = await api.put(path, data=data, content_type="application/x-tar")
    assert stored.status == 201
    assert stored.body["manifest"]["kind"] == "system"
    wrong = await api.put("/ota/v1/bundles/system-9.k3pyb", data=data)
    assert wrong.status == 400
    assert "names it system-0.2.0.k3pyb" in wrong.body["message"]
    garbage = await api.put("/ota/v1/bundles/firmware-1.k3pyb", data=b"x" * 5000)
    assert garbage.status == 400
    listed = await api.get("/ota/v1/bundles", token="node1")
    assert [i["name"] for i in listed.body["items"]] == ["system-0.2.0.k3pyb"]
    assert (await api.get(path, token="jane")).status == 403
    async with _session(api, "node1") as session:
        await download.download(session, path, tmp_path / "got.k3pyb")
    assert (tmp_path / "got.k3pyb").read_bytes() == data
    bundle.verify(tmp_path / "got.k3pyb", bundle.load_public_key(system[1]), BOARD)


async def test_an_interrupted_download_resumes_where_it_stopped(
    api: Api, system: tuple[Path, Path], tmp_path: Path
) -> None:
    data = system[0].read_bytes()
    path = "/ota/v1/bundles/system-0.2.0.k3pyb"
    assert (await api.put(path, data=data)).status == 201
    dest = tmp_path / "got.k3pyb"

    def cut(done: int, total: int | None) -> None:
        if done >= len(data) // 2:
            raise ConnectionResetError("link lost")

    async with _session(api, "node1") as session:
        with pytest.raises(ConnectionResetError):
            await download.download(session, path, dest, progress=cut)
        have = dest.with_name(dest.name + ".partial").stat().st_size
        assert 0 < have < len(data)
        assert not dest.exists()  # only whole downloads ever appear under the name
        transferred = await download.download(session, path, dest)
        assert transferred == len(data) - have
        assert await download.download(session, path, tmp_path / "again") == len(data)
    assert dest.read_bytes() == data


async def test_a_board_fetches_only_the_blocks_it_lacks(
    api: Api, system: tuple[Path, Path], tmp_path: Path
) -> None:
    assert (
        await api.put("/ota/v1/bundles/system-0.2.0.k3pyb", data=system[0].read_bytes())
    ).status == 201
    manifest, found = bundle.read_manifest(system[0], bundle.load_public_key(system[1]))
    slot = manifest.payload("slot")
    index = system[0].read_bytes()[found["rootfs.blocks"].offset :][: found["rootfs.blocks"].size]
    # The running slot: the new one with blocks 3 and 7 different.
    new = bytes(system[0].read_bytes()[found[slot.name].offset :][: slot.size])
    running = bytearray(new)
    for number in (3, 7):
        running[number * 65536] ^= 0xFF
    (tmp_path / "running").write_bytes(bytes(running))
    local = blocks.local_blocks([tmp_path / "running"])
    base = found[slot.name].offset
    async with _session(api, "node1") as session:
        fetched: list[int] = []

        async def fetch(offset: int, length: int) -> bytes:
            fetched.append(offset)
            return await download.fetch_range(
                session, "/ota/v1/bundles/system-0.2.0.k3pyb", base + offset, length
            )

        spans = blocks.plan(index, local).missing
        got = {n: await fetch(n * 65536, min(65536, slot.size - n * 65536)) for n in spans}
    target = io.BytesIO()
    blocks.assemble(target, index, local, lambda o, n: got[o // 65536], slot.size)
    assert target.getvalue() == new
    assert fetched == [3 * 65536, 7 * 65536]


async def test_push_stores_a_bundle_with_the_admin_kubeconfig(
    api: Api, system: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "admin.yaml"
    server = str(api.client.make_url("/")).rstrip("/")
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "admin"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    argv = ["ota", "push", str(system[0]), "--kubeconfig", str(kubeconfig)]
    assert await asyncio.to_thread(main, argv) == 0
    assert "stored system-0.2.0.k3pyb" in capsys.readouterr().out
    listed = await api.get("/ota/v1/bundles")
    assert json.dumps(listed.body).count("system-0.2.0.k3pyb") == 1


async def test_a_node_takes_a_firmware_bundle_and_refuses_a_foreign_one(
    api: Api, tmp_path: Path
) -> None:
    from k3py.cluster.ota.apply import apply_firmware
    from k3py.cluster.ota.firmware import Firmware
    from tests.ota.test_firmware_update import _wheel

    bundler.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    (tmp_path / "other").mkdir()
    bundler.keygen(tmp_path / "other/k.pem", tmp_path / "other/k.pub")
    firmware = Firmware(tmp_path / "firmware")
    for key, version in ((tmp_path / "other/k.pem", "0.3.0"), (tmp_path / "k.pem", "0.2.0")):
        out = tmp_path / f"fw-{version}.k3pyb"
        wheel = _wheel(tmp_path, version, "good")
        signer = bundler.load_private_key(key)
        bundler.firmware_bundle(out, signer, wheel, boards=[], minimum_version=None)
        stored = await api.put(f"/ota/v1/bundles/firmware-{version}.k3pyb", data=out.read_bytes())
        assert stored.status == 201
    phases: list[str] = []

    async def report(phase: str) -> None:
        phases.append(phase)

    async with _session(api, "node1") as session:
        with pytest.raises(bundle.BundleError, match="signed with another key"):
            await apply_firmware(session, "/ota/v1/bundles/firmware-0.3.0.k3pyb",
                                 tmp_path / "work", firmware, BOARD, key_path=tmp_path / "k.pub",
                                 report=report)  # fmt: skip
        assert phases == ["Downloading", "Verifying"]
        assert not Path(firmware.root).exists()  # nothing on the board changed
        phases.clear()
        manifest = await apply_firmware(
            session, "/ota/v1/bundles/firmware-0.2.0.k3pyb", tmp_path / "work", firmware, BOARD,
            key_path=tmp_path / "k.pub", report=report,
        )  # fmt: skip
    assert manifest.version == "0.2.0"
    assert phases == ["Downloading", "Verifying", "Installing"]
    assert firmware.version_of(firmware.current) == "0.2.0"
    assert firmware.trial() is not None  # on probation until the new agent is Ready
    assert list((tmp_path / "work").iterdir()) == []
