"""``k3py check-config``: does this kernel (running, a config file, or an unpacked tree) suit k3py?

The flags become one frozen :class:`CheckConfigSettings`; the check runs on it and the report is
printed as a table, JSON or a config fragment. The exit code is the number of required failures
(capped at 63); unreadable or invalid input ends in one ``k3py: error: …`` line with 65 or 66.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from k3py.errors import UsageError

Output = Literal["table", "json", "fragment"]


@dataclass(frozen=True)
class CheckConfigSettings:
    config: Path | None
    kernel_dir: Path | None
    kernel_release: str | None
    require: frozenset[str]
    output: Output
    colour: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Check a kernel for what k3py needs: the running kernel and system by default, "
        "a kernel config file (plain or gzip), or an unpacked kernel with --kernel-dir."
    )
    parser.add_argument(
        "config",
        nargs="?",
        metavar="PATH",
        help="kernel config to check (default: /proc/config.gz, /boot/config-$(uname -r), ...)",
    )
    parser.add_argument(
        "--kernel-dir",
        metavar="ROOT",
        help="check an unpacked kernel: ROOT/boot/config-<release> and ROOT/lib/modules/<release>",
    )
    parser.add_argument(
        "--kernel-release",
        metavar="RELEASE",
        help="with --kernel-dir: which kernel, when ROOT holds several",
    )
    parser.add_argument(
        "--require",
        metavar="GROUPS",
        default="",
        help="comma-separated optional groups to treat as required, e.g. vxlan,ipvs",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument(
        "--missing-fragment",
        action="store_true",
        help="print CONFIG_...=y lines that fix the failures, to merge into a defconfig",
    )


def settings_from_args(args: argparse.Namespace, *, colour: bool) -> CheckConfigSettings:
    if args.config and args.kernel_dir:
        raise UsageError("give either a config PATH or --kernel-dir, not both")
    if args.kernel_release and not args.kernel_dir:
        raise UsageError("--kernel-release goes with --kernel-dir")
    output: Output = "json" if args.json else "fragment" if args.missing_fragment else "table"
    return CheckConfigSettings(
        config=Path(args.config) if args.config else None,
        kernel_dir=Path(args.kernel_dir) if args.kernel_dir else None,
        kernel_release=args.kernel_release or None,
        require=frozenset(g.strip() for g in args.require.split(",") if g.strip()),
        output=output,
        colour=colour and output == "table",
    )


def run(args: argparse.Namespace) -> int:
    from k3py.cluster.checkconfig import check, render

    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    settings = settings_from_args(args, colour=colour)
    if settings.kernel_dir is not None:
        report = check.check_kernel_dir(
            settings.kernel_dir, settings.require, release=settings.kernel_release
        )
    elif settings.config is not None:
        report = check.check_config_file(settings.config, settings.require)
    else:
        report = check.check_running_system(settings.require)
    if settings.output == "json":
        sys.stdout.write(render.as_json(report))
    elif settings.output == "fragment":
        sys.stdout.write(render.missing_fragment(report))
    else:
        sys.stdout.write(render.table(report, colour=settings.colour))
    return report.exit_code
