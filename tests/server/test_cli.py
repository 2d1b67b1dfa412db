"""``k3py server``'s flags become one ServerSettings; bad values are usage errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from k3py.cluster.server import cli
from k3py.errors import UsageError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_are_k3s_like() -> None:
    settings = cli.settings_from(_parse())
    assert settings.https_listen_port == 6443
    assert settings.data_dir == Path("/var/lib/k3py")
    assert settings.write_kubeconfig == Path("/etc/k3py/k3py.yaml")
    assert settings.write_kubeconfig_mode == 0o600
    assert settings.service_cidr == "10.43.0.0/16"
    assert settings.kubernetes_service_ip == "10.43.0.1"
    assert settings.datastore_sync == "normal"


def test_flags_and_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("K10abc::server:secret\n")
    settings = cli.settings_from(
        _parse(
            "--tls-san",
            "board.example",
            "--tls-san",
            "192.0.2.7",
            "--token-file",
            str(token),
            "--write-kubeconfig-mode",
            "644",
            "--datastore-sync",
            "full",
            "--disable-agent",
        )
    )
    assert settings.tls_sans == ("board.example", "192.0.2.7")
    assert settings.token == "K10abc::server:secret"
    assert settings.write_kubeconfig_mode == 0o644
    assert settings.datastore_sync == "full"
    assert settings.disable_agent is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--https-listen-port", "70000"), "not a TCP port"),
        (("--write-kubeconfig-mode", "rw"), "octal"),
        (("--service-cidr", "10.43.0.0/99"), "not a CIDR"),
        (("--token-file", "/nonexistent/token"), "cannot read --token-file"),
    ],
)
def test_bad_values_are_usage_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        cli.settings_from(_parse(*argv))
