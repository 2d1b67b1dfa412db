"""Bad bundles through a plan: each is refused with its reason in the plan's status, and the
node's firmware is left exactly as it was.

The server stores any well-formed bundle (it has no signing key), so a tampered, truncated,
wrongly signed or incompatible bundle reaches the node; the node's updater, acting on its
``Downloading`` entries, must refuse every one before anything changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from k3py.cluster.client import KubeClient
from k3py.cluster.ota import bundle
from k3py.cluster.ota.agent import Updater
from k3py.cluster.ota.bundle import Running
from k3py.cluster.ota.firmware import Firmware
from k3py.image.ota import bundler
from tests.ota.test_agent_updater import _entry, _plan
from tests.ota.test_distribution import _session
from tests.ota.test_firmware_update import _wheel
from tests.server.conftest import Api

RUNNING = Running("0.1.0", "arm64", "qemu-virt-arm64")


def _signed(
    tmp_path: Path, key: Path, version: str, boards: list[str] | None = None,
    minimum_version: str | None = None,
) -> Path:  # fmt: skip
    out = tmp_path / f"firmware-{version}.k3pyb"
    wheel = _wheel(tmp_path, version, "good")
    bundler.firmware_bundle(out, bundler.load_private_key(key), wheel, boards=boards or [],
                            minimum_version=minimum_version)  # fmt: skip
    return out


def _tree(root: Path) -> dict[str, str]:
    """Every path under the firmware directory, with a symlink's target or a file's size."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = (
                os.readlink(path) if path.is_symlink() else str(path.stat().st_size)
            )
    return found


async def test_bad_bundles_are_refused_with_reasons_and_change_nothing(
    api: Api, tmp_path: Path
) -> None:
    key, other = tmp_path / "k.pem", tmp_path / "o" / "k.pem"
    bundler.keygen(key, tmp_path / "k.pub")
    other.parent.mkdir()
    bundler.keygen(other, other.with_suffix(".pub"))
    bad: dict[str, tuple[Path, str]] = {}
    tampered = _signed(tmp_path, key, "0.2.1")
    member = bundle.members(tampered)["k3py-0.2.1-py3-none-any.whl"]
    data = bytearray(tampered.read_bytes())
    data[member.offset + 100] ^= 0x01
    tampered.write_bytes(bytes(data))
    bad["0.2.1"] = tampered, "does not match its SHA-256"
    # The server refuses a truncated upload; this one is cut on the server's disk afterwards.
    truncated = _signed(tmp_path, key, "0.2.2")
    bad["0.2.2"] = truncated, "truncated"
    bad["0.2.3"] = _signed(tmp_path, other, "0.2.3"), "signed with another key"
    bad["0.2.4"] = (_signed(tmp_path, key, "0.2.4", boards=["rpi4-arm64"]),
                    "for boards rpi4-arm64; this one is qemu-virt-arm64")  # fmt: skip
    bad["0.2.5"] = (_signed(tmp_path, key, "0.2.5", minimum_version="0.1.5"),
                    "needs at least version 0.1.5 running")  # fmt: skip
    bad["0.0.9"] = _signed(tmp_path, key, "0.0.9"), "older than the running 0.1.0"
    for version, (path, _) in bad.items():
        put = await api.put(f"/ota/v1/bundles/firmware-{version}.k3pyb", data=path.read_bytes())
        assert put.status == 201, (version, put.body)  # the server has no key: boards check
        await _plan(api, f"fw-{version.replace('.', '-')}", version, "Downloading")
    (stored,) = (tmp_path / "server").rglob(truncated.name)
    cut = bundle.members(truncated)["k3py-0.2.2-py3-none-any.whl"].offset + 200
    stored.write_bytes(stored.read_bytes()[:cut])

    firmware = Firmware(tmp_path / "firmware")
    firmware.install(_wheel(tmp_path, "0.1.0", "good"), "0.1.0")
    firmware.mark_good()
    before = _tree(Path(firmware.root))
    restarts: list[int] = []
    url = str(api.client.make_url("/")).rstrip("/")
    async with (
        KubeClient(url, ssl_context=None, token="node1") as client,
        _session(api, "node1") as session,
    ):
        updater = Updater(client, session, "node1", firmware, RUNNING, key_path=tmp_path / "k.pub",
                          restart=lambda: restarts.append(1))  # fmt: skip
        assert not await updater.once()  # nothing installed
        for version, (_, reason) in bad.items():
            entry = await _entry(client, f"fw-{version.replace('.', '-')}")
            assert entry["phase"] == "Failed", (version, entry)
            assert reason in entry["message"], (version, entry["message"])
    assert restarts == []
    downloads = Path(firmware.root) / "downloads"
    assert not any(downloads.iterdir())  # a refused download is not kept to resume from
    after = {k: v for k, v in _tree(Path(firmware.root)).items() if not k.startswith("downloads")}
    assert after == before
    assert firmware.version_of(firmware.current) == "0.1.0"
    assert firmware.trial() is None
