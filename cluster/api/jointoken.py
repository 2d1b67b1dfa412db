"""The join token's format, shared by the server that issues it and the agent that presents it.

A join token is K3s's ``K10<sha256 hex of the cluster CA bundle>::<user>:<secret>``: the hash
lets a joining agent pin the server's CA before it trusts anything the server says (no trust on
first use), and the secret is what the agent proves it knows. As with K3s, ``--token`` may also be
a bare secret, which carries no CA hash. This module only parses, formats and checks; it does no
I/O (the server keeps its token in ``<data-dir>/server/token``, see ``k3py.cluster.server.token``).
"""

from __future__ import annotations

import hashlib
import hmac
import string
from typing import NamedTuple

from k3py.errors import K3pyError

PREFIX = "K10"
SERVER_USER = "server"
# Users a secret may be presented as over basic auth, as K3s's supervisor accepts them.
JOIN_USERS = frozenset({SERVER_USER, "node"})
_HEX = frozenset(string.hexdigits.lower())
# A node's certificate names it as CN=system:node:<name>, and X.509 limits a CN to 64
# characters: longer node names cannot join.
NODE_CN_PREFIX = "system:node:"
MAX_NODE_NAME = 64 - len(NODE_CN_PREFIX)


def node_name_too_long(name: str) -> str | None:
    """Why a node name cannot be put in a node certificate, or None when it can."""
    if len(name) <= MAX_NODE_NAME:
        return None
    return (
        f"node name {name!r} is {len(name)} characters long: at most {MAX_NODE_NAME} fit in a"
        f" node certificate (CN={NODE_CN_PREFIX}<name> is limited to 64); choose a shorter"
        " --node-name"
    )


class JoinTokenError(K3pyError):
    """A join token that cannot be parsed, or that belongs to another cluster."""


class JoinToken(NamedTuple):
    """A parsed join token; ``ca_hash`` is empty for a bare secret."""

    secret: str
    ca_hash: str = ""
    user: str = SERVER_USER

    def format(self) -> str:
        """The full ``K10…::user:secret`` text; needs the CA hash."""
        if not self.ca_hash:
            raise JoinTokenError("a bare secret has no CA hash to format a full join token with")
        return f"{PREFIX}{self.ca_hash}::{self.user}:{self.secret}"

    def matches_ca(self, ca_bundle: bytes) -> bool:
        """True when the token pins exactly this CA bundle (a bare secret pins nothing: False)."""
        return bool(self.ca_hash) and hmac.compare_digest(self.ca_hash, ca_hash(ca_bundle))

    def secret_matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret.encode(), secret.encode())


def ca_hash(ca_bundle: bytes) -> str:
    """The token's CA pin: the sha256 hex digest of the CA bundle exactly as /cacerts serves it."""
    return hashlib.sha256(ca_bundle).hexdigest()


def _check_secret(secret: str) -> None:
    if not secret:
        raise JoinTokenError("the join token's secret is empty")
    if any(c.isspace() or not c.isprintable() for c in secret):
        raise JoinTokenError(
            "the join token's secret must not contain spaces or control characters"
        )


def parse(text: str) -> JoinToken:
    """Parse a full ``K10`` token or a bare secret (surrounding whitespace is ignored)."""
    text = text.strip()
    if not text:
        raise JoinTokenError("the join token is empty")
    if not text.startswith(PREFIX):
        _check_secret(text)
        return JoinToken(secret=text)
    body = text[len(PREFIX) :]
    pin, sep, credentials = body.partition("::")
    if not sep:
        raise JoinTokenError(
            "a join token starting with K10 must read K10<ca-hash>::<user>:<secret>"
        )
    pin = pin.lower()
    if len(pin) != 64 or not set(pin) <= _HEX:
        raise JoinTokenError(
            "the join token's CA hash must be 64 hex digits (a sha256); copy the whole token "
            "from 'k3py token' on the server"
        )
    user, colon, secret = credentials.partition(":")
    if not colon:
        # K3s accepts K10<hash>::<secret> and treats it as the server's secret.
        user, secret = SERVER_USER, credentials
    if not user:
        raise JoinTokenError("the join token's user is empty")
    _check_secret(secret)
    return JoinToken(secret=secret, ca_hash=pin, user=user)


def server_token(ca_bundle: bytes, secret: str) -> str:
    """The full server join token for a CA bundle and a secret."""
    _check_secret(secret)
    return JoinToken(secret=secret, ca_hash=ca_hash(ca_bundle)).format()
