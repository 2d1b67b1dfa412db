"""``k3py image build``: the command-line edge of the image builder.

Flags (also ``K3PY_*`` variables) become one frozen :class:`~k3py.image.context.BuildSettings`;
the pipeline does the rest. ``SOURCE_DATE_EPOCH`` fixes every time stamp in the image.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from k3py.errors import UsageError

DEFAULT_CACHE = "/var/cache/k3py/packages"
# 2025-08-09, Debian 13's release: a fixed default keeps rebuilds identical without the variable.
DEFAULT_EPOCH = 1754697600


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Build bootable board images with the k3py server or agent baked in."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="build <board>-<role>.img and its companions")
    build.add_argument("--board", required=True, help="board name (a folder in board/) or path")
    build.add_argument("--role", required=True, choices=("server", "agent"))
    build.add_argument(
        "--config",
        dest="k3py_yaml",
        metavar="FILE",
        help="k3py.yaml to bake into the boot partition",
    )
    build.add_argument("--out", default="out", help="output directory (default: out)")
    build.add_argument(
        "--work-dir", help="scratch directory (default: build/<board>-<role>, emptied first)"
    )
    build.add_argument(
        "--cache-dir",
        default=DEFAULT_CACHE,
        help=f"package and index cache, shared by builds (default: {DEFAULT_CACHE})",
    )
    build.add_argument("--mirror", default=None, help="Debian mirror URL")
    build.add_argument(
        "--security-mirror", default=None, help="Debian security archive URL (for <suite>-security)"
    )
    build.add_argument(
        "--suite",
        default=None,
        help="Debian release (default: trixie); its -updates and -security suites are read too",
    )
    build.add_argument(
        "--refresh-packages", action="store_true", help="download fresh package indices"
    )
    build.add_argument("--lock", metavar="FILE", help="replay the exact packages of a lock file")
    build.add_argument("--overlay", metavar="DIR", help="extra files copied into the root")
    build.add_argument(
        "--prune", action="append", default=[], metavar="GLOB", help="extra paths to delete"
    )
    build.add_argument(
        "--container-image",
        action="append",
        default=[],
        metavar="TAR",
        help="a 'docker save' tarball to preload on agents (repeatable)",
    )
    build.add_argument(
        "--firmware",
        metavar="PATH",
        help="the k3py wheel to install, or a source tree to build it from (default: the tree "
        "this k3py is installed from in editable mode, else this k3py's own files)",
    )
    build.add_argument(
        "--ota-key",
        metavar="PUB",
        help="the public key (k3py ota keygen) whose bundles the image accepts; without it "
        "every update bundle is refused",
    )
    actions.add_parser("boards", help="list the known boards")


def run(args: argparse.Namespace) -> int:
    from k3py.image import board, debian
    from k3py.image.content import load_content
    from k3py.image.context import BuildSettings
    from k3py.image.pipeline import build

    if args.action == "boards":
        for name in board.available_boards():
            print(f"{name:<20} {board.load_board(name).description}")
        return 0
    epoch_text = os.environ.get("SOURCE_DATE_EPOCH", str(DEFAULT_EPOCH))
    if not epoch_text.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH must be seconds since 1970, got {epoch_text!r}")
    checked = [("--config", args.k3py_yaml), ("--lock", args.lock), ("--overlay", args.overlay),
               ("--firmware", args.firmware), ("--ota-key", args.ota_key)]  # fmt: skip
    checked += [("--container-image", path) for path in args.container_image]
    for flag, value in checked:
        if value is not None and not Path(value).exists():
            raise UsageError(f"{flag} {value} does not exist")
    cache = Path(args.cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"cannot use the package cache {cache} ({err}); pass --cache-dir"
        ) from None
    if not os.access(cache, os.W_OK):
        raise UsageError(f"the package cache {cache} is not writable; pass --cache-dir")
    the_board = board.load_board(args.board)
    name = f"{the_board.name}-{args.role}"
    settings = BuildSettings(
        board=the_board,
        role=args.role,
        out_dir=Path(args.out),
        work_dir=Path(args.work_dir) if args.work_dir else Path("build") / name,
        cache_dir=cache,
        content=load_content(),
        source_date_epoch=int(epoch_text),
        config_file=Path(args.k3py_yaml) if args.k3py_yaml else None,
        mirror=args.mirror or debian.DEFAULT_MIRROR,
        security_mirror=args.security_mirror or debian.DEFAULT_SECURITY_MIRROR,
        suite=args.suite or debian.DEFAULT_SUITE,
        refresh_packages=args.refresh_packages,
        lock_file=Path(args.lock) if args.lock else None,
        overlay=Path(args.overlay) if args.overlay else None,
        extra_prune=tuple(args.prune),
        container_images=tuple(Path(p) for p in args.container_image),
        firmware=Path(args.firmware) if args.firmware else None,
        ota_key=_ota_key(Path(args.ota_key)) if args.ota_key else None,
    )
    context = build(settings, sys.stdout)
    image = context.facts["image"]
    print(f"k3py image build: wrote {image} and its .img.zst, .bmap, .sha256, manifest.json")
    return 0


def _ota_key(path: Path) -> Path:
    """The key, once it reads as the Ed25519 public key boards expect (a wrong file fails now,
    not on the board at its first update)."""
    from k3py.cluster.ota.bundle import BundleError, load_public_key

    try:
        load_public_key(path)
    except BundleError as err:
        raise UsageError(f"--ota-key {path}: {err}") from None
    return path
