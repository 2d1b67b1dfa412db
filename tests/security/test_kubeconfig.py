"""The admin kubeconfig: k3s.yaml's shape, embedded credentials, file mode and atomic writes."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml

from k3py.cluster.server.kubeconfig import KubeconfigError, parse_mode, write_kubeconfig
from k3py.cluster.server.pki import ClusterPKI

URL = "https://127.0.0.1:6443"


def test_kubeconfig_has_k3s_shape_with_embedded_credentials(
    pki: ClusterPKI, tmp_path: Path
) -> None:
    path = tmp_path / "etc" / "k3py.yaml"
    write_kubeconfig(path, 0o600, URL, pki)
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == [
        "apiVersion",
        "clusters",
        "contexts",
        "current-context",
        "kind",
        "preferences",
        "users",
    ]
    assert doc["kind"] == "Config"
    assert doc["current-context"] == "default"
    assert doc["contexts"] == [
        {"context": {"cluster": "default", "user": "default"}, "name": "default"}
    ]
    (cluster,) = doc["clusters"]
    assert cluster["name"] == "default"
    assert cluster["cluster"]["server"] == URL
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == pki.ca_bundle()
    (user,) = doc["users"]
    assert user["name"] == "default"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == pki.admin_cert.read_bytes()
    assert base64.b64decode(user["user"]["client-key-data"]) == pki.admin_key.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["k3py.yaml"]  # no temp file left


def test_kubeconfig_mode_is_applied_on_rewrite(pki: ClusterPKI, tmp_path: Path) -> None:
    path = tmp_path / "k3py.yaml"
    write_kubeconfig(path, 0o600, URL, pki)
    write_kubeconfig(path, parse_mode("644"), "https://192.0.2.10:6443", pki)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "https://192.0.2.10:6443" in path.read_text()


def test_the_official_client_loads_it(pki: ClusterPKI, tmp_path: Path) -> None:
    from kubernetes import client, config

    path = tmp_path / "k3py.yaml"
    write_kubeconfig(path, 0o600, URL, pki)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == URL
    assert Path(configuration.ssl_ca_cert).read_bytes() == pki.ca_bundle()
    assert Path(configuration.cert_file).read_bytes() == pki.admin_cert.read_bytes()


@pytest.mark.parametrize(("text", "mode"), [("600", 0o600), ("0644", 0o644), (None, 0o600)])
def test_parse_mode(text: str | None, mode: int) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["rw-r--r--", "999", "1777"])
def test_parse_mode_refuses_non_modes(text: str) -> None:
    with pytest.raises(KubeconfigError, match="--write-kubeconfig-mode"):
        parse_mode(text)
