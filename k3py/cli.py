"""The ``k3py`` command line: one thin edge in front of every subcommand.

Each subcommand lives in its own module (listed in :data:`COMMANDS`) with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command
is chosen, so ``k3py agent`` never pays for the image builder's imports. Flags may also come from
``K3PY_<FLAG>`` environment variables and, for commands that declare ``CONFIG_FILES``, from YAML
config files whose keys are the flag names (as K3s reads ``config.yaml``). Precedence: command
line, then environment, then config file, then the flag's default.

Errors derived from :class:`k3py.errors.K3pyError` end in one readable line and their exit code;
anything else is reported as an internal error. ``--debug`` shows tracebacks and debug logs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from k3py import __version__, log
from k3py.errors import K3pyError, UsageError

ENV_PREFIX = "K3PY_"
DEFAULT_KUBECONFIG = "/etc/k3py/k3py.yaml"
EX_SOFTWARE = 70


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str


COMMANDS: tuple[Command, ...] = (
    Command(
        "server", "run the k3py server (API, datastore, controllers)", "k3py.cluster.server.cli"
    ),
    Command("agent", "run the k3py agent on a node", "k3py.cluster.agent.cli"),
    Command(
        "check-config", "check a kernel configuration for k3py", "k3py.cluster.checkconfig.cli"
    ),
    Command("token", "show or create join tokens", "k3py.cluster.server.token_cli"),
    Command("image", "build bootable board images", "k3py.image.cli"),
    Command("flash", "write an image to an SD card, verified", "k3py.image.flash.cli"),
    Command("ota", "over-the-air update bundles (not built yet)", "k3py.image.ota.cli"),
)


def _truthy(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise UsageError(f"expected a boolean (true/false), got {value!r}")


def _flag_key(action: argparse.Action) -> str | None:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return max(longs, key=len)[2:] if longs else None


def _load_config_files(paths: Sequence[str], explicit: bool) -> dict[str, Any]:
    import yaml

    merged: dict[str, Any] = {}
    for path in paths:
        file = Path(path)
        if not file.exists():
            if explicit:
                raise UsageError(f"config file {path} does not exist")
            continue
        try:
            data = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"cannot read config file {path}: {err}") from None
        if data is None:
            continue
        if not isinstance(data, dict):
            raise UsageError(f"config file {path}: expected a mapping of flag names to values")
        merged.update({str(k): v for k, v in data.items()})
    return merged


def _defaults_from_sources(
    parser: argparse.ArgumentParser, env: Mapping[str, str], config: Mapping[str, Any]
) -> dict[str, Any]:
    """Flag defaults taken from the config file, then overridden by K3PY_* variables."""
    defaults: dict[str, Any] = {}
    for action in parser._actions:
        key = _flag_key(action)
        if key is None or key in {"help", "config", "debug"}:
            continue
        env_name = ENV_PREFIX + key.upper().replace("-", "_")
        is_bool = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        is_list = isinstance(action, argparse._AppendAction)
        value: Any = None
        if key in config:
            raw = config[key]
            if is_list:
                items = raw if isinstance(raw, list) else [raw]
                value = [action.type(str(i)) if callable(action.type) else str(i) for i in items]
            elif is_bool:
                value = raw if isinstance(raw, bool) else _truthy(str(raw))
            else:
                value = str(raw)
        if env_name in env:
            raw_env = env[env_name]
            if is_list:
                value = [s.strip() for s in raw_env.split(",") if s.strip()]
                if callable(action.type):
                    value = [action.type(v) for v in value]
            elif is_bool:
                value = _truthy(raw_env)
            else:
                value = raw_env
        if value is not None:
            if is_bool and isinstance(action, argparse._StoreFalseAction):
                value = not value
            defaults[action.dest] = value
    return defaults


def _build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[Any]]:
    parser = argparse.ArgumentParser(
        prog="k3py", description="A lightweight Kubernetes-compatible cluster for ARM edge boards."
    )
    parser.add_argument("--version", action="version", version=f"k3py {__version__}")
    parser.add_argument("--debug", action="store_true", help="show debug logs and tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        subparsers.add_parser(command.name, help=command.help)
    subparsers.add_parser(
        "kubectl", help="run kubectl with the cluster's kubeconfig", add_help=False
    )
    return parser, subparsers


def _run_kubectl(argv: Sequence[str]) -> int:
    env = dict(os.environ)
    env.setdefault("KUBECONFIG", DEFAULT_KUBECONFIG)
    try:
        return subprocess.call(["kubectl", *argv], env=env)
    except FileNotFoundError:
        raise K3pyError(
            "kubectl is not installed on this system (install it, then retry)"
        ) from None


def _import_command(command: Command) -> ModuleType:
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as err:
        if err.name and command.module.startswith(err.name):
            raise K3pyError(
                f"'k3py {command.name}' is not available in this build of k3py"
            ) from None
        raise


def parse(argv: Sequence[str], env: Mapping[str, str]) -> tuple[argparse.Namespace, ModuleType]:
    """Parse argv for one subcommand, with defaults from the environment and config files."""
    parser, subparsers = _build_parser()
    # The command is the first word that is not a top-level option. It is found without
    # argparse, which would otherwise answer a subcommand's --help before its flags exist.
    name = next((a for a in argv if not a.startswith("-")), None)
    command = next((c for c in COMMANDS if c.name == name), None)
    if command is None:
        parser.parse_args(argv)  # --version, --help, or an "invalid choice" usage error
        parser.print_help()
        raise SystemExit(0)
    module = _import_command(command)
    sub: argparse.ArgumentParser = subparsers.choices[command.name]
    sub.add_argument("--debug", action="store_true", help="show debug logs and tracebacks")
    config_files: tuple[str, ...] = getattr(module, "CONFIG_FILES", ())
    if config_files:
        sub.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help=f"config file (default: {', '.join(config_files)}) [$K3PY_CONFIG_FILE]",
        )
    module.add_arguments(sub)
    config: dict[str, Any] = {}
    if config_files:
        rest = [a for a in argv[argv.index(command.name) + 1 :] if a not in ("-h", "--help")]
        pre, _ = sub.parse_known_args(rest)
        explicit = pre.config or env.get("K3PY_CONFIG_FILE")
        config = _load_config_files([explicit] if explicit else config_files, bool(explicit))
    sub.set_defaults(**_defaults_from_sources(sub, env, config))
    args = parser.parse_args(argv)
    args.debug = bool(args.debug)
    return args, module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if argv and argv[0] == "kubectl":
        return _run_kubectl(argv[1:])
    try:
        args, module = parse(argv, os.environ)
        log.setup(debug=args.debug)
        result: int = module.run(args)
        return result
    except K3pyError as err:
        if debug:
            logging.getLogger("k3py").exception("failed")
        print(f"k3py: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("k3py: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(
            f"k3py: internal error: {type(err).__name__}: {err} (run with --debug for details)",
            file=sys.stderr,
        )
        return EX_SOFTWARE
