"""Joining the cluster once, and the node credentials that make later starts need no token.

The join follows K3s: fetch ``/cacerts`` without trusting the connection, check that its
sha256 is the CA hash the join token pins (a mismatch is refused: the token belongs to another
cluster, or someone is in the middle), then, now over TLS verified against that CA, ask
``/v1-k3py/node-certificate`` for a client certificate (``CN=system:node:<name>``) in exchange
for the token, a CSR and the node's password. The private key is made on the node by a short
child process (``openssl req``, or :mod:`.csr` where there is no ``openssl``) and never leaves
it. Everything is kept in ``<data-dir>/agent``:
``server-ca.crt``, ``client-kubelet.crt``/``.key``, ``node-password``, ``node-name`` and
``server-url``; a restart with those files needs neither a token nor the server.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import secrets
import shutil
import ssl
import sys
import time
from pathlib import Path
from typing import NamedTuple

from k3py.cluster.agent.errors import JoinError
from k3py.cluster.agent.settings import AgentSettings
from k3py.cluster.api import jointoken
from k3py.cluster.client import blocking
from k3py.fsutil import write_atomic

logger = logging.getLogger("k3py.agent.join")

CA_FILE = "server-ca.crt"
CERT_FILE = "client-kubelet.crt"
KEY_FILE = "client-kubelet.key"
PASSWORD_FILE = "node-password"  # noqa: S105 (a file name)
NAME_FILE = "node-name"
SERVER_FILE = "server-url"
NODE_ID_FILE = "node-id"
CERTIFICATE_PATH = "/v1-k3py/node-certificate"


class NodeIdentity(NamedTuple):
    node_name: str
    server_url: str
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_FILE

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def node_name(settings: AgentSettings) -> str:
    """The node's name; ``--with-node-id`` appends an id kept across restarts."""
    if not settings.with_node_id:
        return settings.node_name
    path = settings.agent_dir / NODE_ID_FILE
    node_id = _read(path)
    if not node_id:
        node_id = secrets.token_hex(4)
        write_atomic(path, node_id.encode() + b"\n", 0o644)
    return f"{settings.node_name}-{node_id}"


def _token_text(settings: AgentSettings, wait_until: float) -> str | None:
    if settings.token:
        return settings.token
    if settings.token_file is None:
        return None
    # The server may still be writing the file it starts its own agent with.
    while True:
        text = _read(settings.token_file)
        if text:
            return text
        if time.monotonic() > wait_until:
            raise JoinError(f"--token-file {settings.token_file} does not exist or is empty")
        time.sleep(0.2)


def stored_identity(settings: AgentSettings, name: str) -> NodeIdentity | None:
    directory = settings.agent_dir
    files = (CA_FILE, CERT_FILE, KEY_FILE)
    if not all((directory / f).exists() for f in files) or _read(directory / NAME_FILE) != name:
        return None
    server = settings.server_url or _read(directory / SERVER_FILE)
    if not server:
        return None
    return NodeIdentity(name, server, directory)


def _usable(stored: NodeIdentity) -> bool:
    try:
        stored.ssl_context()
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


async def ensure_identity(settings: AgentSettings) -> NodeIdentity:
    """The node's credentials: the stored ones, or new ones from joining."""
    name = node_name(settings)
    deadline = time.monotonic() + settings.join_timeout_seconds
    token_text = _token_text(settings, time.monotonic() + 30)
    stored = stored_identity(settings, name)
    if stored is not None:
        if token_text is None:
            return stored
        token = jointoken.parse(token_text)
        if not _usable(stored):
            # Torn by a power cut, say: with the token at hand the node joins again (its
            # password file, written durably, still matches) instead of failing every start.
            logger.warning(
                "the stored node credentials cannot be loaded; joining again",
                extra={"fields": {"directory": str(stored.directory)}},
            )
        elif not token.ca_hash or token.matches_ca(stored.ca_file.read_bytes()):
            return stored
        else:
            logger.info("the join token names another cluster's CA; joining again")
    server = settings.server_url or _read(settings.agent_dir / SERVER_FILE)
    if not server:
        raise JoinError(
            f"no node credentials in {settings.agent_dir} and no server to join: pass "
            "--server https://HOST:6443 and --token (or set K3PY_URL and K3PY_TOKEN)"
        )
    if token_text is None:
        raise JoinError(
            f"no node credentials in {settings.agent_dir}: pass the cluster's join token with "
            "--token, --token-file or K3PY_TOKEN (the server prints it with 'k3py token')"
        )
    return await join(settings, name, server, token_text, deadline)


async def join(
    settings: AgentSettings, name: str, server: str, token_text: str, deadline: float
) -> NodeIdentity:
    token = jointoken.parse(token_text)
    if not token.ca_hash:
        raise JoinError(
            "the join token is a bare secret without the cluster CA's hash, so the server "
            "cannot be verified; use the full K10… token that 'k3py token' prints on the server"
        )
    ca_bundle = await _fetch_cacerts(server, deadline)
    if not token.matches_ca(ca_bundle):
        raise JoinError(
            f"the server at {server} presented a CA certificate with sha256 "
            f"{jointoken.ca_hash(ca_bundle)}, but the join token pins {token.ca_hash}: the token "
            "belongs to another cluster, or something between this node and the server is "
            "impersonating it. Refusing to join; copy the token again from 'k3py token' on the "
            "server"
        )
    directory = settings.agent_dir
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    password = _read(directory / PASSWORD_FILE)
    if not password:
        password = secrets.token_hex(16)
        write_atomic(directory / PASSWORD_FILE, password.encode() + b"\n")
    key_path = directory / (KEY_FILE + ".new")
    csr = await _make_csr(key_path, name)
    certificate = await _request_certificate(server, ca_bundle, token_text, name, csr, password)
    write_atomic(directory / CA_FILE, ca_bundle, 0o644)
    write_atomic(directory / CERT_FILE, certificate.encode(), 0o644)
    # openssl does not sync the key it writes: written again as every credential is, so a
    # power cut soon after the join cannot leave an empty key behind a complete certificate.
    write_atomic(directory / KEY_FILE, key_path.read_bytes(), 0o600)
    key_path.unlink(missing_ok=True)
    write_atomic(directory / NAME_FILE, name.encode() + b"\n", 0o644)
    write_atomic(directory / SERVER_FILE, server.encode() + b"\n", 0o644, sync_directory=True)
    logger.info("joined the cluster", extra={"fields": {"node": name, "server": server}})
    return NodeIdentity(name, server, directory)


async def _fetch_cacerts(server: str, deadline: float) -> bytes:
    delay = 0.5
    while True:
        try:
            status, body = await blocking.fetch(server + "/cacerts", deadline=15)
            if status == 200 and b"BEGIN CERTIFICATE" in body:
                return body
            problem = f"GET /cacerts answered {status}"
        except ValueError as err:  # no host, or a port that is not a number
            raise JoinError(f"--server {server!r} is not a usable URL: {err}") from None
        except (http.client.HTTPException, OSError) as err:
            problem = str(err) or type(err).__name__
        if time.monotonic() > deadline:
            raise JoinError(f"cannot reach the server at {server}: {problem}; check --server")
        logger.info(
            "waiting for the server", extra={"fields": {"server": server, "error": problem}}
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


def csr_command(key_path: Path, name: str) -> list[str]:
    """The command that writes the node's new key to ``key_path`` and prints its CSR.

    The ``openssl`` program when the machine has it (every board image does, and most Linux
    machines): it starts in a blink where a Python child importing ``cryptography`` costs an
    emulated board about a second and a half of its first boot. Otherwise :mod:`.csr`.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return [sys.executable, "-m", "k3py.cluster.agent.node.csr", str(key_path), name]
    return [
        openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key_path), "-sha256",
        "-subj", f"/O=system:nodes/CN=system:node:{name}",
    ]  # fmt: skip


async def _make_csr(key_path: Path, name: str) -> str:
    problem = jointoken.node_name_too_long(name)
    if problem is not None:
        raise JoinError(problem)
    key_path.unlink(missing_ok=True)
    process = await asyncio.create_subprocess_exec(
        *csr_command(key_path, name),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        umask=0o077,
    )
    out, err = await process.communicate()
    if process.returncode != 0 or b"BEGIN CERTIFICATE REQUEST" not in out:
        raise JoinError(f"cannot create the node's key and CSR: {err.decode(errors='replace')}")
    return out.decode()


async def _request_certificate(
    server: str, ca_bundle: bytes, token: str, name: str, csr: str, password: str
) -> str:
    try:
        context = ssl.create_default_context(cadata=ca_bundle.decode("ascii", "replace"))
    except ssl.SSLError as err:
        raise JoinError(f"the server's CA bundle (/cacerts) is not usable: {err}") from None
    body = {"nodeName": name, "csr": csr, "nodePassword": password}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        status, raw = await blocking.fetch(
            server + CERTIFICATE_PATH,
            "POST",
            ssl_context=context,
            body=json.dumps(body).encode(),
            headers=headers,
            deadline=30,
        )
    except ssl.SSLCertVerificationError as err:
        raise JoinError(
            f"the server at {server} is not covered by its certificate ({err.verify_message});"
            " add this address to the server's --tls-san"
        ) from None
    except (http.client.HTTPException, OSError) as err:
        raise JoinError(f"cannot reach the server at {server}: {err}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {}
    if status != 200:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise JoinError(f"the server refused this node ({status}): {message or raw[:200]!r}")
    certificate = answer.get("certificate") if isinstance(answer, dict) else None
    if not isinstance(certificate, str) or "BEGIN CERTIFICATE" not in certificate:
        raise JoinError("the server's answer carries no node certificate")
    return certificate
