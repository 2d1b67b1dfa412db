"""The server's join token on disk: ``<data-dir>/server/token``, mode 0600.

:func:`ensure_server_token` runs at every start. It keeps the secret of a ``--token`` the user
gave (a full ``K10`` token or a bare secret, as K3s accepts both), else the secret already
stored, else a new random one, and writes the full token pinned to the current CA bundle. The
token's format lives in ``k3py.cluster.api.jointoken`` so that the agent parses it the same way.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from k3py.cluster.api import jointoken
from k3py.cluster.server.pki import write_private
from k3py.errors import K3pyError

logger = logging.getLogger("k3py.server.token")


class TokenError(K3pyError):
    """The join token cannot be read, parsed or stored."""


def token_path(data_dir: Path) -> Path:
    return data_dir / "server" / "token"


def read_token_file(path: Path) -> str:
    """The token in a ``--token-file``: its content without surrounding whitespace."""
    try:
        text = path.read_text().strip()
    except OSError as err:
        raise TokenError(f"cannot read the token file {path}: {err.strerror or err}") from None
    if not text:
        raise TokenError(f"the token file {path} is empty")
    return text


def read_server_token(data_dir: Path) -> str:
    """The join token a server stored in ``data_dir``."""
    path = token_path(data_dir)
    if not path.exists():
        raise TokenError(
            f"no join token at {path}: start 'k3py server' with this --data-dir first "
            f"(or pass the --data-dir the server uses)"
        )
    text = read_token_file(path)
    try:
        jointoken.parse(text)
    except jointoken.JoinTokenError as err:
        raise TokenError(
            f"{path} holds an unreadable join token ({err}); remove it and restart "
            "the server to create a new one"
        ) from None
    return text


def _parse_given(given: str, ca_bundle: bytes) -> jointoken.JoinToken:
    try:
        parsed = jointoken.parse(given)
    except jointoken.JoinTokenError as err:
        raise TokenError(f"--token: {err}") from None
    if parsed.ca_hash and not parsed.matches_ca(ca_bundle):
        raise TokenError(
            "--token pins another cluster CA than this server's: pass only its secret "
            "(the part after '::server:') or the token printed by 'k3py token' on this server"
        )
    return parsed


def _stored_secret(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return jointoken.parse(read_token_file(path)).secret
    except (jointoken.JoinTokenError, TokenError) as err:
        logger.warning(
            "ignoring the unreadable stored join token; a new one is created",
            extra={"fields": {"path": str(path), "error": str(err)}},
        )
        return None


def _store(path: Path, token: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, f"{token}\n".encode())
    except OSError as err:
        raise TokenError(f"cannot write the join token {path}: {err}") from None


# A secret shorter than this can be guessed online; the server warns when given one.
MIN_SECRET_CHARS = 16


def ensure_server_token(data_dir: Path, ca_bundle: bytes, given: str | None) -> str:
    """The full server join token ``K10<sha256 of the CA bundle>::server:<secret>``, stored in
    ``<data-dir>/server/token`` (created on first start, reused after)."""
    path = token_path(data_dir)
    stored = _stored_secret(path)
    if given:
        secret = _parse_given(given, ca_bundle).secret
        if len(secret) < MIN_SECRET_CHARS:
            logger.warning(
                f"the join token's secret is {len(secret)} characters long: anyone who guesses"
                f" it gets a node certificate; use at least {MIN_SECRET_CHARS} random"
                " characters (or let k3py generate one)",
                extra={"fields": {"path": str(path)}},
            )
        if stored is not None and stored != secret:
            logger.warning(
                "the join token changed; nodes that already joined keep their certificates, "
                "new nodes must use the new token",
                extra={"fields": {"path": str(path)}},
            )
    elif stored is not None:
        secret = stored
    else:
        secret = secrets.token_hex(16)
    token = jointoken.server_token(ca_bundle, secret)
    current = path.read_text().strip() if path.exists() else None
    if current != token:
        _store(path, token)
        logger.info("stored join token", extra={"fields": {"path": str(path)}})
    return token


def rotate_server_token(data_dir: Path, ca_bundle: bytes, new: str | None = None) -> str:
    """Replace the stored join token's secret with ``new`` (or a random one); the server uses it
    from its next start."""
    path = token_path(data_dir)
    read_server_token(data_dir)  # refuse to rotate where no server has run
    secret = _parse_given(new, ca_bundle).secret if new else secrets.token_hex(16)
    token = jointoken.server_token(ca_bundle, secret)
    _store(path, token)
    return token
