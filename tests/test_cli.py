"""The CLI edge: flag sources and precedence, and one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from k3py import cli
from k3py.errors import UsageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="/var/lib/k3py")
    parser.add_argument("--https-listen-port", type=int, default=6443)
    parser.add_argument("--tls-san", action="append", default=[])
    parser.add_argument("--disable-agent", action="store_true")
    return parser


def test_environment_overrides_config_file_and_defaults() -> None:
    parser = _parser()
    config = {"data-dir": "/srv/k3py", "https-listen-port": 7443, "tls-san": ["a.example"]}
    env = {"K3PY_HTTPS_LISTEN_PORT": "8443", "K3PY_DISABLE_AGENT": "true"}
    parser.set_defaults(**cli._defaults_from_sources(parser, env, config))
    args = parser.parse_args([])
    assert args.data_dir == "/srv/k3py"
    assert args.https_listen_port == 8443
    assert args.tls_san == ["a.example"]
    assert args.disable_agent is True


def test_command_line_wins_over_environment() -> None:
    parser = _parser()
    parser.set_defaults(**cli._defaults_from_sources(parser, {"K3PY_DATA_DIR": "/env"}, {}))
    assert parser.parse_args(["--data-dir", "/flag"]).data_dir == "/flag"


def test_bad_boolean_in_environment_is_a_usage_error() -> None:
    parser = _parser()
    with pytest.raises(UsageError, match="boolean"):
        cli._defaults_from_sources(parser, {"K3PY_DISABLE_AGENT": "maybe"}, {})


def test_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        cli._load_config_files([str(bad)], explicit=True)


def test_version_and_unknown_command() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "k3py", "--version"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0
    assert ok.stdout.startswith("k3py ")
    bad = subprocess.run(
        [sys.executable, "-m", "k3py", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


def test_subcommand_help_lists_the_subcommands_own_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "k3py", "server", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "--data-dir" in result.stdout
    assert "--https-listen-port" in result.stdout
