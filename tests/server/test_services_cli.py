"""K3s's component flags on ``k3py server``: --disable servicelb, --no-deploy, --cluster-dns."""

from __future__ import annotations

import argparse

import pytest

from k3py.cluster.server.cli import add_arguments, settings_from
from k3py.cluster.server.controllers.serving import control_plane_settings
from k3py.errors import UsageError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_disable_servicelb_turns_the_controller_off() -> None:
    settings = settings_from(parse("--disable", "servicelb"))
    assert settings.disable_components == ("servicelb",)
    assert not control_plane_settings(settings).enabled("servicelb")
    assert control_plane_settings(settings_from(parse())).enabled("servicelb")


def test_no_deploy_is_the_old_name_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_from(parse("--no-deploy", "servicelb", "--disable", "traefik"))
    assert set(settings.disable_components) == {"servicelb", "traefik"}
    notes = capsys.readouterr().err.splitlines()
    assert any("--no-deploy is K3s's old name for --disable" in n for n in notes)
    assert any("k3py runs no traefik" in n for n in notes)
    with pytest.raises(UsageError, match="not a component"):
        settings_from(parse("--disable", "nginx"))


def test_cluster_dns_and_domain() -> None:
    default = settings_from(parse())
    assert default.cluster_dns_ip == "10.43.0.10"
    assert default.cluster_domain == "cluster.local"
    other = settings_from(
        parse("--service-cidr", "10.96.0.0/12", "--cluster-domain", "edge.internal.")
    )
    assert other.cluster_dns_ip == "10.96.0.10"
    assert other.cluster_domain == "edge.internal"
    assert settings_from(parse("--cluster-dns", "10.43.0.53")).cluster_dns_ip == "10.43.0.53"
    with pytest.raises(UsageError, match="--cluster-dns"):
        settings_from(parse("--cluster-dns", "dns.local"))
