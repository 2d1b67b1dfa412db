"""``k3py token``: print the server's join token, or rotate it.

``k3py token`` prints the token a server stored in ``<data-dir>/server/token`` (what
``cat /var/lib/rancher/k3s/server/token`` shows on K3s); ``k3py token rotate`` replaces its
secret (a new random one, or ``--new-token``). A running server keeps the old token until it
restarts; nodes that already joined keep their certificates either way.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from k3py.errors import UsageError

CONFIG_FILES = ("/etc/k3py/config.yaml",)
# That file is the server's: its keys are the server's flags, of which this command uses some.
CONFIG_SHARED_WITH = ("server",)
DEFAULT_DATA_DIR = "/var/lib/k3py"


@dataclass(frozen=True)
class TokenSettings:
    data_dir: Path
    action: str
    new_token: str | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        default="show",
        choices=("show", "rotate"),
        help="show the join token (default) or rotate its secret",
    )
    parser.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"the server's data directory (default {DEFAULT_DATA_DIR}) [$K3PY_DATA_DIR]",
    )
    parser.add_argument(
        "--new-token",
        default=None,
        help="with rotate: the new secret or full token (default: a random secret)",
    )


def run(args: argparse.Namespace) -> int:
    settings = TokenSettings(
        data_dir=Path(args.data_dir), action=args.action, new_token=args.new_token or None
    )
    if settings.new_token and settings.action != "rotate":
        raise UsageError("--new-token is only meaningful with 'k3py token rotate'")
    from k3py.cluster.server import token

    if settings.action == "show":
        print(token.read_server_token(settings.data_dir))
        return 0
    ca_cert = settings.data_dir / "server" / "tls" / "server-ca.crt"
    try:
        ca_bundle = ca_cert.read_bytes()
    except OSError as err:
        raise token.TokenError(
            f"cannot read the cluster CA {ca_cert}: {err.strerror or err} "
            "(start 'k3py server' with this --data-dir first, or run as root)"
        ) from None
    new = token.rotate_server_token(settings.data_dir, ca_bundle, settings.new_token)
    print(new)
    print(
        "restart 'k3py server' to use the new token (if it is started with --token or "
        "--token-file, change that setting too); joined nodes keep working",
        file=sys.stderr,
    )
    return 0
