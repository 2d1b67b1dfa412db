"""The ``k3py`` command line: one thin edge in front of every subcommand.

Each subcommand lives in its own module (listed in :data:`COMMANDS`) with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command
is chosen, so ``k3py agent`` never pays for the image builder's imports. Flags may also come from
``K3PY_<FLAG>`` environment variables and, for commands that declare ``CONFIG_FILES``, from YAML
config files whose keys are the flag names (as K3s reads ``config.yaml``); a key no flag has is
refused, naming the closest flag. Precedence: command line, then environment, then config file,
then the flag's default. Commands needing an optional extra (``k3py[image]``) say so in one line.

Errors derived from :class:`k3py.errors.K3pyError` end in one readable line and their exit code;
anything else is reported as an internal error. ``--debug`` shows tracebacks and debug logs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from k3py import __version__, log
from k3py.errors import K3pyError, MissingExtra, UsageError

ENV_PREFIX = "K3PY_"
DEFAULT_KUBECONFIG = "/etc/k3py/k3py.yaml"
EX_SOFTWARE = 70


class Command(NamedTuple):
    name: str
    help: str
    module: str
    # (extra, modules): the optional extra of the distribution the command cannot run without.
    extra: tuple[str, tuple[str, ...]] | None = None


COMMANDS: tuple[Command, ...] = (
    Command(
        "server", "run the k3py server (API, datastore, controllers)", "k3py.cluster.server.cli"
    ),
    Command("agent", "run the k3py agent on a node", "k3py.cluster.agent.cli"),
    Command(
        "check-config", "check a kernel configuration for k3py", "k3py.cluster.checkconfig.cli"
    ),
    Command("token", "show or create join tokens", "k3py.cluster.server.token_cli"),
    Command(
        "image",
        "build bootable board images",
        "k3py.image.cli",
        extra=("image", ("jinja2", "elftools", "zstandard", "debian")),
    ),
    Command("flash", "write an image to an SD card, verified", "k3py.image.flash.cli"),
    Command("ota", "over-the-air update bundles: keygen, bundle, inspect", "k3py.image.ota.cli"),
)


def _truthy(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise UsageError(f"expected a boolean (true/false), got {value!r}")


class Flag(NamedTuple):
    """One flag as the environment and config files name it (``key``) and fill it."""

    key: str  # the longest long option without its dashes: K3PY_<KEY>, and the config file key
    dest: str
    kind: str  # "bool", "list" or "value"
    negated: bool = False  # store_false: a true setting stores False
    convert: Callable[[str], Any] | None = None


class FlagParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that keeps a public record of its flags.

    argparse keeps its actions in private attributes only; the environment and config layering
    needs every flag's name and kind, so this parser records them as they are added, from the
    :class:`argparse.Action` that ``add_argument`` returns and the ``action`` keyword it was given.
    Every subcommand's parser (and theirs) is one (``add_subparsers`` passes the class on).
    """

    flags: list[Flag]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags = []  # before argparse adds --help
        self._built = False  # argparse makes its own two groups while initialising
        super().__init__(*args, **kwargs)
        self._built = True

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.record(action, kwargs.get("action"))
        return action

    def add_mutually_exclusive_group(self, *, required: bool = False) -> Any:
        return _RecordedGroup(self, super().add_mutually_exclusive_group(required=required))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        return _RecordedGroup(self, group) if self._built else group

    def record(self, action: argparse.Action, kind: object) -> None:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or kind in {"help", "version", "count"}:
            return
        key = max(longs, key=len)[2:]
        convert = action.type if callable(action.type) else None
        if kind in {"store_true", "store_false"}:
            self.flags.append(Flag(key, action.dest, "bool", negated=kind == "store_false"))
        elif action.nargs == 0:  # another action that takes no value (--flag/--no-flag)
            self.flags.append(Flag(key, action.dest, "bool"))
        elif kind in {"append", "extend"} or action.nargs in {"*", "+"}:
            self.flags.append(Flag(key, action.dest, "list", convert=convert))
        else:
            self.flags.append(Flag(key, action.dest, "value", convert=convert))


class _RecordedGroup:
    """An argument group or mutually exclusive group whose flags the parser records too."""

    def __init__(self, parser: FlagParser, group: Any) -> None:
        self._parser, self._group = parser, group

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action: argparse.Action = self._group.add_argument(*args, **kwargs)
        self._parser.record(action, kwargs.get("action"))
        return action


def _layered_flags(parser: FlagParser) -> list[Flag]:
    """The flags the environment and config files may set (not --help and --config)."""
    return [f for f in parser.flags if f.key not in {"help", "config"}]


def unknown_key_error(source: str, key: str, valid: Sequence[str]) -> str:
    """The one line that refuses a config key no flag has, naming the closest valid one."""
    import difflib

    closest = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    hint = f"; did you mean '{closest[0]}'?" if closest else ""
    return f"{source}: unknown key '{key}' (no flag --{key}{hint})"


def _parse_config(path: str, file: Path) -> Any:
    """A config file's document. JSON first (JSON is YAML; the boards' boot configuration
    writes the file so), which needs no YAML parser: importing one costs an emulated board
    about a third of a second of its start, and a long-running agent would hold it (about
    1 MB of resident memory). Anything else is YAML."""
    try:
        text = file.read_text()
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err}") from None
    if text.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"cannot read config file {path}: {err}") from None


def _load_config_files(
    paths: Sequence[str], explicit: bool, valid: Sequence[str] | None = None
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in paths:
        file = Path(path)
        if not file.exists():
            if explicit:
                raise UsageError(f"config file {path} does not exist")
            continue
        data = _parse_config(path, file)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise UsageError(f"config file {path}: expected a mapping of flag names to values")
        for key in data:
            if valid is not None and str(key) not in valid:
                raise UsageError(unknown_key_error(f"config file {path}", str(key), valid))
        merged.update({str(k): v for k, v in data.items()})
    return merged


def _converted(flag: Flag, value: str) -> Any:
    return flag.convert(value) if flag.convert is not None else value


def _defaults_from_sources(
    parser: FlagParser, env: Mapping[str, str], config: Mapping[str, Any]
) -> dict[str, Any]:
    """Flag defaults taken from the config file, then overridden by K3PY_* variables."""
    defaults: dict[str, Any] = {}
    for flag in _layered_flags(parser):
        env_name = ENV_PREFIX + flag.key.upper().replace("-", "_")
        value: Any = None
        if flag.key in config:
            raw = config[flag.key]
            if flag.kind == "list":
                items = raw if isinstance(raw, list) else [raw]
                value = [_converted(flag, str(i)) for i in items]
            elif flag.kind == "bool":
                value = raw if isinstance(raw, bool) else _truthy(str(raw))
            else:
                value = str(raw)
        if env_name in env:
            raw_env = env[env_name]
            if flag.kind == "list":
                value = [_converted(flag, s.strip()) for s in raw_env.split(",") if s.strip()]
            elif flag.kind == "bool":
                value = _truthy(raw_env)
            else:
                value = raw_env
        if value is not None:
            if flag.negated:
                value = not value
            defaults[flag.dest] = value
    return defaults


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, FlagParser]]:
    parser = argparse.ArgumentParser(
        prog="k3py", description="A lightweight Kubernetes-compatible cluster for ARM edge boards."
    )
    parser.add_argument("--version", action="version", version=f"k3py {__version__}")
    parser.add_argument("--debug", action="store_true", help="show debug logs and tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=FlagParser)
    commands = {c.name: subparsers.add_parser(c.name, help=c.help) for c in COMMANDS}
    subparsers.add_parser(
        "kubectl", help="run kubectl with the cluster's kubeconfig", add_help=False
    )
    return parser, commands


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
    if command.extra is not None:
        extra, modules = command.extra
        for name in modules:
            if importlib.util.find_spec(name) is None:
                raise MissingExtra(f"'k3py {command.name}'", extra, name)
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as err:
        if err.name and command.module.startswith(err.name):
            raise K3pyError(
                f"'k3py {command.name}' is not available in this build of k3py"
            ) from None
        raise


def _add_flags(sub: FlagParser, module: ModuleType) -> tuple[str, ...]:
    """The command's own flags plus --debug (and --config when it reads config files)."""
    # SUPPRESS: an absent --debug after the command keeps a --debug given before it.
    sub.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show debug logs and tracebacks",
    )
    config_files: tuple[str, ...] = getattr(module, "CONFIG_FILES", ())
    if config_files:
        sub.add_argument(
            "-c",
            "--config",
            metavar="FILE",
            help=f"config file (default: {', '.join(config_files)}) [$K3PY_CONFIG_FILE]",
        )
    module.add_arguments(sub)
    return config_files


def _shared_keys(module: ModuleType) -> set[str]:
    """Keys valid in a command's config file because it shares the file with other commands
    (``CONFIG_SHARED_WITH``: ``k3py token`` reads the server's); only its own flags apply."""
    shared: tuple[str, ...] = getattr(module, "CONFIG_SHARED_WITH", ())
    return {key for name in shared for key in config_keys(name)}


def config_keys(name: str) -> list[str]:
    """The keys a config file of ``k3py <name>`` may hold: the names of its flags.

    The boards' boot configuration checks ``k3py.yaml`` against these, so the list of valid
    keys is the command's own definition, never a copy.
    """
    command = next((c for c in COMMANDS if c.name == name), None)
    if command is None:
        raise UsageError(f"no command {name!r}")
    sub = FlagParser(prog=f"k3py {name}")
    _add_flags(sub, _import_command(command))
    return sorted(f.key for f in _layered_flags(sub))


def parse(argv: Sequence[str], env: Mapping[str, str]) -> tuple[argparse.Namespace, ModuleType]:
    """Parse argv for one subcommand, with defaults from the environment and config files."""
    parser, commands = _build_parser()
    # The command is the first word that is not a top-level option. It is found without
    # argparse, which would otherwise answer a subcommand's --help before its flags exist.
    name = next((a for a in argv if not a.startswith("-")), None)
    command = next((c for c in COMMANDS if c.name == name), None)
    if command is None:
        parser.parse_args(argv)  # --version, --help, or an "invalid choice" usage error
        parser.print_help()
        raise SystemExit(0)
    module = _import_command(command)
    sub = commands[command.name]
    config_files = _add_flags(sub, module)
    config: dict[str, Any] = {}
    if config_files:
        rest = [a for a in argv[argv.index(command.name) + 1 :] if a not in ("-h", "--help")]
        pre, _ = sub.parse_known_args(rest)
        explicit = pre.config or env.get("K3PY_CONFIG_FILE")
        valid = sorted({f.key for f in _layered_flags(sub)} | _shared_keys(module))
        config = _load_config_files([explicit] if explicit else config_files, bool(explicit), valid)
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
