"""The board's ``k3py.yaml``: keys are checked against the role's command definitions.

The boot script from the image overlay runs here against a scratch root (its paths redirected),
as it runs on every boot: a key no flag has is one console line naming the closest valid key,
and the board still gets every valid setting.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest
import yaml


def _bootconfig(root: Path, role: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    script = resources.files("k3py.image").joinpath("overlay/usr/lib/k3py/bootconfig.py")
    spec = importlib.util.spec_from_file_location("k3py_bootconfig_under_test", str(script))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (root / "etc").mkdir(parents=True)
    (root / "etc/k3py-role").write_text(f"{role}\n")
    for name, path in {
        "ROLE_FILE": "etc/k3py-role",
        "CONFIG": "etc/k3py/config.yaml",
        "BOOT_ENV": "run/k3py/boot.env",
        "SHADOW": "run/k3py/shadow",
        "AUTHORIZED_KEYS": "root/.ssh/authorized_keys",
        "DOCKERD_DISABLED": "run/k3py/dockerd.disabled",
        "CONTAINERD_DISABLED": "run/k3py/containerd.disabled",
    }.items():
        monkeypatch.setattr(module, name, root / path)
    return module


def test_unknown_key_is_one_console_line_and_the_rest_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bootconfig = _bootconfig(tmp_path / "root", "agent", monkeypatch)
    card = tmp_path / "k3py.yaml"
    card.write_text(
        "server: https://192.0.2.10:6443\ntoken: K10abc::server:secret\n"
        "node-lable: [zone=a]\nhostname: node2\n"
    )
    assert bootconfig.main(["bootconfig", str(card)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "k3py-bootconfig: k3py.yaml: unknown key 'node-lable' (no flag --node-lable; "
        "did you mean 'node-label'?); ignored"
    ]
    config = yaml.safe_load((tmp_path / "root/etc/k3py/config.yaml").read_text())
    assert config == {"server": "https://192.0.2.10:6443", "token": "K10abc::server:secret"}
    assert "K3PY_HOSTNAME=node2" in (tmp_path / "root/run/k3py/boot.env").read_text()


def test_server_gets_only_keys_its_command_defines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bootconfig = _bootconfig(tmp_path / "root", "server", monkeypatch)
    card = tmp_path / "k3py.yaml"
    card.write_text("tls-san: [192.0.2.10]\ncluster-cidr: 10.42.0.0/16\nsevrer-typo: 1\n")
    bootconfig.main(["bootconfig", str(card)])
    written = yaml.safe_load((tmp_path / "root/etc/k3py/config.yaml").read_text())
    assert written["tls-san"] == ["192.0.2.10"]
    assert written["cluster-cidr"] == "10.42.0.0/16"
    assert "sevrer-typo" not in written
    assert "unknown key 'sevrer-typo'" in capsys.readouterr().err
