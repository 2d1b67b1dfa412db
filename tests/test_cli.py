"""The CLI edge: flag sources and precedence, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from k3py import cli
from k3py.errors import UsageError


def _parser() -> cli.FlagParser:
    parser = cli.FlagParser()
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


def test_config_file_is_json_or_yaml(tmp_path: Path) -> None:
    # JSON (what the boards' boot configuration writes) reads without a YAML parser; a YAML
    # flow mapping that is not JSON, and block YAML, read as YAML; a broken file is one line.
    written = tmp_path / "written.yaml"
    written.write_text('{\n  "node-label": ["zone=a"],\n  "server": "https://192.0.2.10:6443"\n}\n')
    flow = tmp_path / "flow.yaml"
    flow.write_text("{server: 'https://192.0.2.11:6443', node-label: [zone=b]}\n")
    block = tmp_path / "block.yaml"
    block.write_text("server: https://192.0.2.12:6443\n")
    probe = (
        "import sys; from k3py import cli; "
        f"print(cli._load_config_files([{str(written)!r}], True)); print('yaml' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert shown == [
        "{'node-label': ['zone=a'], 'server': 'https://192.0.2.10:6443'}",
        "False",
    ]
    assert cli._load_config_files([str(flow)], True) == {
        "server": "https://192.0.2.11:6443",
        "node-label": ["zone=b"],
    }
    assert cli._load_config_files([str(block)], True) == {"server": "https://192.0.2.12:6443"}
    broken = tmp_path / "broken.yaml"
    broken.write_text('{"server": "https://192.0.2.13:6443",\n  bad: [\n')
    with pytest.raises(UsageError, match="cannot read config file .*broken.yaml"):
        cli._load_config_files([str(broken)], True)


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


def _k3py(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k3py", *argv], capture_output=True, text=True, check=False, env=env
    )


@pytest.mark.parametrize("command", ["server", "agent"])
def test_unknown_config_key_is_refused_naming_the_closest_flag(
    command: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("data-dir: /srv/k3py\ndata-dri: /typo\n")
    result = _k3py(command, "--config", str(config))
    assert result.returncode == 64
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"k3py: error: config file {config}: unknown key 'data-dri' (no flag --data-dri; "
        "did you mean 'data-dir'?)"
    ]


def test_config_keys_come_from_the_commands_own_flags() -> None:
    server = cli.config_keys("server")
    assert {"data-dir", "https-listen-port", "tls-san", "disable-agent", "debug"} <= set(server)
    assert "config" not in server
    assert "help" not in server
    assert {"server", "token", "node-name", "node-label"} <= set(cli.config_keys("agent"))


def test_flag_kinds_are_recorded_without_argparse_internals() -> None:
    parser = cli.FlagParser()
    parser.add_argument("--quiet", action="store_false", dest="verbose")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--label", action="append", default=[])
    titled = parser.add_argument_group("network")
    titled.add_argument("--port", type=int, default=1)
    kinds = {f.key: (f.kind, f.negated) for f in parser.flags}
    assert kinds == {
        "quiet": ("bool", True),
        "json": ("bool", False),
        "label": ("list", False),
        "port": ("value", False),
    }
    assert "network:" in parser.format_help()
    env = {"K3PY_QUIET": "true", "K3PY_JSON": "1", "K3PY_LABEL": "a=1, b=2"}
    parser.set_defaults(**cli._defaults_from_sources(parser, env, {"port": 7}))
    args = parser.parse_args([])
    assert (args.verbose, args.json, args.label, args.port) == (False, True, ["a=1", "b=2"], 7)


def test_image_build_without_the_image_extra_names_the_extra(tmp_path: Path) -> None:
    # The interpreter is made to find no jinja2, as in an install without the extra.
    sitecustomize = tmp_path / "sitecustomize.py"
    sitecustomize.write_text(
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'jinja2' else _find(n, *a)\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = _k3py("image", "build", "--board", "qemu-virt-arm64", "--role", "agent", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "k3py: error: 'k3py image' needs k3py's [image] extra (no module 'jinja2'): "
        "pip install 'k3py[image]'"
    ]


@pytest.mark.parametrize(
    "argv",
    [["--debug", "server"], ["server", "--debug"], ["--debug", "token"]],
)
def test_debug_before_or_after_the_command_turns_debug_on(argv: list[str]) -> None:
    from k3py.cli import parse

    args, _ = parse(argv, {})
    assert args.debug is True
    assert parse(argv[-1:] if argv[0] == "--debug" else argv[:1], {})[0].debug is False


def test_token_reads_the_servers_config_file_and_takes_its_own_keys(tmp_path: Path) -> None:
    # /etc/k3py/config.yaml is the server's: its keys are valid for `k3py token`, which uses
    # data-dir; a key neither command has is still refused.
    config = tmp_path / "config.yaml"
    config.write_text(f"data-dir: {tmp_path / 'data'}\ntls-san: [edge.example.com]\n")
    shown = _k3py("token", "--config", str(config))
    assert str(tmp_path / "data") in shown.stderr
    config.write_text("tls-sna: [edge.example.com]\n")
    refused = _k3py("token", "--config", str(config))
    assert refused.returncode == 64
    assert "unknown key 'tls-sna'" in refused.stderr
    assert "did you mean 'tls-san'?" in refused.stderr
