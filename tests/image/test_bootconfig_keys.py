"""The board's ``k3py.yaml``: keys are checked against the role's command definitions.

The boot script from the image overlay runs here against a scratch root (its paths redirected),
as it runs on every boot: a key no flag has is one console line naming the closest valid key,
and the board still gets every valid setting.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from k3py.cli import config_keys


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
        "CONFIG_KEYS": "usr/lib/k3py/config-keys",
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
    # Written as JSON (which is YAML), so the service reads it without a YAML parser.
    assert json.loads((tmp_path / "root/etc/k3py/config.yaml").read_text()) == config
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


def test_the_image_s_list_of_keys_is_what_the_board_checks_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    bootconfig = _bootconfig(root, "agent", monkeypatch)
    # The list the image build writes for an agent: every flag of ``k3py agent``.
    configure_keys = root / "usr/lib/k3py/config-keys"
    configure_keys.parent.mkdir(parents=True)
    configure_keys.write_text("\n".join(config_keys("agent")) + "\n")
    card = tmp_path / "k3py.yaml"
    card.write_text("token: K10abc::server:secret\nnode-label: [zone=a]\ntls-san: [x]\n")
    bootconfig.main(["bootconfig", str(card)])
    written = yaml.safe_load((root / "etc/k3py/config.yaml").read_text())
    assert written == {"token": "K10abc::server:secret", "node-label": ["zone=a"]}
    assert "unknown key 'tls-san'" in capsys.readouterr().err  # a server's flag, not an agent's
    # A list without a key refuses it, even one the firmware's command has: the image's list
    # is the one consulted.
    configure_keys.write_text("token\n")
    bootconfig.main(["bootconfig", str(card)])
    assert yaml.safe_load((root / "etc/k3py/config.yaml").read_text()) == {
        "token": "K10abc::server:secret"
    }
    assert "unknown key 'node-label'" in capsys.readouterr().err


def test_a_data_partition_that_cannot_grow_is_one_line_and_the_settings_still_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bootconfig = _bootconfig(tmp_path / "root", "agent", monkeypatch)
    monkeypatch.setattr(sys, "path", list(sys.path))  # grow_data adds its folder
    card = tmp_path / "k3py.yaml"
    card.write_text("token: K10abc::server:secret\nhostname: node3\n")
    assert bootconfig.main(["bootconfig", "--grow-data", "/dev/k3py-no-such-disk", str(card)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("k3py-bootconfig: could not grow /dev/k3py-no-such-disk: ")
    config = yaml.safe_load((tmp_path / "root/etc/k3py/config.yaml").read_text())
    assert config == {"token": "K10abc::server:secret"}
    assert "K3PY_HOSTNAME=node3" in (tmp_path / "root/run/k3py/boot.env").read_text()
