"""``k3py flash IMAGE TARGET``: the command-line edge of the flash pipeline.

Parses the flags into one :class:`~k3py.image.flash.flashing.FlashSettings`, supplies the real
console (questions on the terminal, progress redrawn on a terminal or printed as lines in logs),
runs the pipeline and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from k3py.errors import UsageError
from k3py.image.flash.progress import LineProgress, Progress, TerminalProgress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a board image (raw, .zst, .xz or .gz) to an SD card or USB stick: only the "
        "blocks its bmap lists, verified by reading them back, then personalised."
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="image file, maybe compressed")
    parser.add_argument("target", type=Path, metavar="TARGET", help="card device, e.g. /dev/sdb")
    parser.add_argument(
        "--bmap", type=Path, metavar="FILE", help="bmap file (default: X.img.bmap or X.bmap)"
    )
    parser.add_argument(
        "--no-bmap", action="store_true", help="ignore any bmap and write the whole image"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="do not read the card back after writing"
    )
    parser.add_argument(
        "--hostname", metavar="NAME", help="hostname for this card (set in its k3py.yaml)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="node.yaml",
        help="settings for this card, written as k3py.yaml into its boot partition",
    )
    parser.add_argument(
        "--allow-file", action="store_true", help="allow TARGET to be a regular file"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write even a fixed, mounted or system disk, or a partition (dangerous)",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


class TerminalConsole:
    """Talks on stderr; asks on the terminal when there is one."""

    def __init__(self, stream: TextIO, answers: TextIO) -> None:
        self._stream = stream
        self._answers = answers

    @property
    def interactive(self) -> bool:
        return self._answers.isatty() and self._stream.isatty()

    def say(self, line: str) -> None:
        self._stream.write(f"k3py flash: {line}\n")
        self._stream.flush()

    def confirm(self, question: str) -> bool:
        self._stream.write(f"{question} Type 'yes' to continue: ")
        self._stream.flush()
        return self._answers.readline().strip().lower() in {"y", "yes"}

    def progress(self) -> Progress:
        if self._stream.isatty():
            return TerminalProgress(self._stream)
        return LineProgress(self._stream)


def run(args: argparse.Namespace) -> int:
    from k3py.image.bmap import human_size
    from k3py.image.flash.flashing import FlashSettings, flash

    if args.no_bmap and args.bmap is not None:
        raise UsageError("--bmap and --no-bmap contradict each other; pass one of them")
    settings = FlashSettings(
        image=args.image,
        target=args.target,
        bmap=args.bmap,
        use_bmap=not args.no_bmap,
        verify=not args.no_verify,
        allow_file=args.allow_file,
        force=args.force,
        assume_yes=args.yes,
        hostname=args.hostname,
        config=args.config,
    )
    report = flash(settings, TerminalConsole(sys.stderr, sys.stdin))
    how = f"{human_size(report.written)} written"
    how += " with bmap" if report.bmap else " (whole image)"
    how += ", verified" if report.verified else ", not verified"
    if report.config_text is not None:
        how += ", k3py.yaml written"
    total = sum(report.timings.values())
    print(f"{settings.target}: flashed {settings.image}: {how} in {total:.1f} s")
    return 0
