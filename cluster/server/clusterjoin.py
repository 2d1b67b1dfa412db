"""Servers sharing one datastore share one cluster: the CA, its key and the token, as K3s does.

The first server on a shared datastore creates its PKI and join token as usual and stores the
cluster's secret files in the datastore under :data:`BOOTSTRAP_KEY` (outside ``/registry``, so
no API request reaches it), encrypted with AES-GCM under a key derived by PBKDF2 from the join
token's secret. Another server started with the same ``--datastore-endpoint`` and ``--token``
decrypts them and writes them into its own data directory before it loads its PKI, so it
issues its own serving certificate from the one CA and every kubeconfig and node credential
works against every server. A wrong or missing token cannot decrypt them: the server stops with
one line before it writes anything, locally or in the datastore.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from k3py.cluster.api import jointoken
from k3py.cluster.server import pki, token
from k3py.cluster.server.store import Datastore, KeyExists
from k3py.errors import K3pyError

if TYPE_CHECKING:
    from k3py.cluster.server.settings import ServerSettings

logger = logging.getLogger("k3py.server.join")

BOOTSTRAP_KEY = "/bootstrap/k3py"
FORMAT = 1
# Paths under <data-dir>/server that make up the cluster's identity; every server's own serving
# and admin certificates are issued locally from the shared CA.
SHARED_FILES = (
    "tls/server-ca.crt",
    "tls/server-ca.key",
    "token",
    "cred/tokens",
    # Every server verifies the ServiceAccount tokens any server issued.
    "tls/service-account.key",
)
_ITERATIONS = 200_000
_AAD = b"k3py bootstrap v1"


class JoinError(K3pyError):
    """This server cannot join the cluster in the shared datastore."""


def _key(secret: str, salt: bytes) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=_ITERATIONS)
    return kdf.derive(secret.encode())


def seal(files: dict[str, bytes], secret: str) -> bytes:
    salt, nonce = os.urandom(16), os.urandom(12)
    plain = json.dumps({path: base64.b64encode(data).decode() for path, data in files.items()})
    sealed = AESGCM(_key(secret, salt)).encrypt(nonce, plain.encode(), _AAD)
    record = {"format": FORMAT, "salt": salt, "nonce": nonce, "data": sealed}
    return json.dumps({k: _b64(v) for k, v in record.items()}).encode()


def _b64(value: object) -> object:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def unseal(record: bytes, secret: str) -> dict[str, bytes]:
    """The files in a sealed record; :class:`JoinError` if the secret does not open it."""
    try:
        fields = json.loads(record)
        if fields.get("format") != FORMAT:
            raise JoinError(
                f"the datastore's cluster data has format {fields.get('format')}, this k3py"
                f" reads {FORMAT}; run the same k3py version on every server"
            )
        salt, nonce, data = (base64.b64decode(fields[k]) for k in ("salt", "nonce", "data"))
    except (ValueError, KeyError, TypeError):
        raise JoinError(
            "the datastore's cluster data is unreadable; restore the database"
        ) from None
    try:
        plain = AESGCM(_key(secret, salt)).decrypt(nonce, data, _AAD)
    except InvalidTag:
        raise JoinError(
            "--token does not match the cluster in this datastore; pass the token of the"
            " first server (k3py token on that server, or its <data-dir>/server/token)"
        ) from None
    return {path: base64.b64decode(text) for path, text in json.loads(plain).items()}


def _given_secret(data_dir: Path, given: str | None) -> str | None:
    if given:
        try:
            return jointoken.parse(given).secret
        except jointoken.JoinTokenError as err:
            raise JoinError(f"--token: {err}") from None
    path = token.token_path(data_dir)
    if path.exists():
        return jointoken.parse(token.read_token_file(path)).secret
    return None


def _write(data_dir: Path, files: dict[str, bytes]) -> None:
    server = data_dir / "server"
    for relative in SHARED_FILES:
        if relative not in files:
            continue
        path = server / relative
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = 0o644 if relative.endswith(".crt") else 0o600
        if not path.exists() or path.read_bytes() != files[relative]:
            pki.write_private(path, files[relative], mode)


def _read(data_dir: Path) -> dict[str, bytes]:
    server = data_dir / "server"
    return {rel: (server / rel).read_bytes() for rel in SHARED_FILES if (server / rel).exists()}


async def join_or_publish(
    datastore: Datastore,
    data_dir: Path,
    given_token: str | None,
    *,
    create_local: Callable[[], None],
) -> str:
    """Load the cluster's secrets from the datastore, or publish this server's; returns which.

    ``create_local`` creates (or loads) this server's PKI and token files, as a server on its
    own datastore does; it runs only when the datastore holds no cluster yet.
    """
    secret = _given_secret(data_dir, given_token)
    stored = await datastore.get(BOOTSTRAP_KEY)
    if stored is None:
        create_local()
        secret = _given_secret(data_dir, given_token)
        assert secret is not None  # create_local stored a token
        try:
            await datastore.create(BOOTSTRAP_KEY, seal(_read(data_dir), secret))
        except KeyExists:  # another server started first, at the same moment
            stored = await datastore.get(BOOTSTRAP_KEY)
            if stored is None:
                raise JoinError("the cluster data vanished from the datastore; retry") from None
        else:
            logger.info("stored the cluster's CA and token in the shared datastore")
            return "created"
    if secret is None:
        raise JoinError(
            "this datastore already holds a cluster: start this server with its --token"
            " (k3py token on the first server)"
        )
    files = unseal(stored.value, secret)
    if given_token:
        parsed = jointoken.parse(given_token)
        ca = files.get("tls/server-ca.crt", b"")
        if parsed.ca_hash and not parsed.matches_ca(ca):
            raise JoinError("--token pins another CA than the cluster in this datastore")
    _write(data_dir, files)
    logger.info("joined the cluster in the shared datastore")
    return "joined"


def is_shared(endpoint: str | None) -> bool:
    """Whether a datastore endpoint can be shared by several servers."""
    scheme = (endpoint or "").partition("://")[0].lower()
    return scheme in ("postgres", "postgresql")


async def prepare(settings: ServerSettings) -> None:
    """Before the server loads its PKI: join the cluster in a shared datastore, or publish it."""
    if not is_shared(settings.datastore_endpoint):
        return
    from k3py.cluster.server.store import open_datastore

    datastore = open_datastore(settings.datastore_endpoint, settings.data_dir)

    def create_local() -> None:
        ca = pki.ensure_pki(
            settings.data_dir, settings.tls_sans, service_cidr=settings.service_cidr
        )
        token.ensure_server_token(settings.data_dir, ca.ca_bundle(), settings.token)
        from k3py.cluster.server.auth import ensure_token_file

        ensure_token_file(settings.data_dir)
        from k3py.cluster.server.satoken import ensure_signing_key

        ensure_signing_key(settings.data_dir)

    await datastore.start()
    try:
        await join_or_publish(
            datastore, settings.data_dir, settings.token, create_local=create_local
        )
    finally:
        await datastore.close()
