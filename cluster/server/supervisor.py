"""The agent-facing endpoints (K3s's "supervisor" API) on the API server's port.

- ``GET /cacerts``: the CA bundle; a joining agent checks its sha256 against the join token
  before trusting the server (anonymous).
- ``GET /ping``: ``pong`` (anonymous).
- ``POST /v1-k3py/node-certificate``: a node's client certificate in exchange for the join
  token. The request carries ``Authorization: Bearer <join token or its secret>`` (or basic auth
  ``node:<secret>``, as K3s agents send) and a JSON body ``{"nodeName": "...", "csr": "<PEM
  certificate signing request>", "nodePassword": "..."}``. The answer is ``{"certificate":
  "<PEM>", "caBundle": "<PEM>"}``: ``CN=system:node:<nodeName>``, ``O=system:nodes``, 1 year.
  The node's private key never leaves the node. As in K3s, the first request for a node name
  records a hash of its node password (``<data-dir>/server/cred/node-passwd``) and later requests
  for that name must present the same password, so one node's join token cannot obtain another
  node's identity; a reinstalled node with a new password is refused until its Node object is
  deleted (``kubectl delete node``), as K3s refuses it until the node's password secret goes
  with the Node.
- ``GET /v1-k3py/connect``: the agent's websocket tunnel (:mod:`k3py.cluster.server.tunnel`),
  opened with the node's client certificate; the server carries ``kubectl logs`` and
  ``kubectl exec`` to the node over it.

Every refusal is a Kubernetes ``Status`` (400, 401, 403, 413).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from k3py.cluster.api import jointoken
from k3py.cluster.api.status import (
    ApiError,
    bad_request,
    request_entity_too_large,
    too_many_requests,
    unauthorized,
)
from k3py.cluster.server.auth import (
    CONNECT_PATH,
    NODE_CERTIFICATE_PATH,
    NODE_USER_PREFIX,
    NODES_GROUP,
)
from k3py.cluster.server.pki import CSRError, write_private
from k3py.cluster.server.store.model import Datastore, StoreError

if TYPE_CHECKING:
    from k3py.cluster.server.pki import ClusterPKI

logger = logging.getLogger("k3py.server.supervisor")

__all__ = ["CONNECT_PATH", "NodePasswords", "Supervisor", "add_routes"]

MAX_REQUEST_BYTES = 64 * 1024
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _status_response(error: ApiError) -> web.Response:
    return web.json_response(error.to_status(), status=error.code)


def _node_name_problem(name: str) -> str | None:
    if not name:
        return "nodeName is required"
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        return (
            f"nodeName {name!r} is not a valid node name: lower case letters, digits, '-' and "
            "'.', starting and ending with a letter or digit, at most 253 characters"
        )
    return jointoken.node_name_too_long(name)


class NodePasswords:
    """Hashes of each node's password, one ``name,salt,sha256`` line per node."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, tuple[str, str]]:
        entries: dict[str, tuple[str, str]] = {}
        if not self.path.exists():
            return entries
        for line in self.path.read_text().splitlines():
            parts = line.strip().split(",")
            if len(parts) == 3 and parts[0]:
                entries[parts[0]] = (parts[1], parts[2])
        return entries

    @staticmethod
    def _digest(salt: str, password: str) -> str:
        # Node passwords are random secrets the agent generates; a salted hash keeps the file
        # from being a credential itself.
        return hashlib.sha256(f"{salt}:{password}".encode()).hexdigest()

    def check(self, node: str, password: str) -> bool | None:
        """Whether ``password`` is the node's recorded one; None for a node not seen yet."""
        entry = self._read().get(node)
        if entry is None:
            return None
        salt, digest = entry
        return hmac.compare_digest(digest, self._digest(salt, password))

    def record(self, node: str, password: str) -> None:
        entries = self._read()
        salt = secrets.token_hex(8)
        entries[node] = (salt, self._digest(salt, password))
        self._write(entries)

    def forget(self, node: str) -> None:
        """Drop a node's password (its Node was deleted): the name may join anew."""
        entries = self._read()
        if entries.pop(node, None) is not None:
            self._write(entries)

    def _write(self, entries: dict[str, tuple[str, str]]) -> None:
        text = "".join(f"{n},{s},{d}\n" for n, (s, d) in entries.items())
        write_private(self.path, text.encode())


NODES_PREFIX = "/registry/nodes/"


async def forget_deleted_nodes(datastore: Datastore, passwords: NodePasswords) -> None:
    """Drop the password of every Node deleted from now on (K3s deletes the node's password
    secret with the Node), so a reinstalled machine rejoins once its old Node is deleted."""
    while True:
        watch = datastore.watch(NODES_PREFIX, revision=0)
        try:
            async for events in watch:
                for event in events:
                    if event.type == "delete":
                        passwords.forget(event.kv.key[len(NODES_PREFIX) :])
        except StoreError as err:  # cut off (WatchExpired): watch again from now
            logger.warning("node watch ended, watching again", extra={"fields": {"error": err}})
        finally:
            watch.close()
        await asyncio.sleep(1.0)


class FailedJoins:
    """Wrong join tokens per source address: after a few, that source waits before trying again.

    A source may fail :attr:`BURST` times, then once per :attr:`INTERVAL` seconds (a token
    bucket), which turns thousands of online guesses per second into a handful per minute.
    At most :attr:`SOURCES` sources are remembered.
    """

    BURST = 10
    INTERVAL = 6.0
    SOURCES = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, updated)

    def _tokens(self, source: str) -> float:
        tokens, updated = self._buckets.get(source, (float(self.BURST), self._clock()))
        return min(float(self.BURST), tokens + (self._clock() - updated) / self.INTERVAL)

    def refused_for(self, source: str) -> int:
        """Seconds ``source`` must wait before its next attempt (0: it may try now)."""
        tokens = self._tokens(source)
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) * self.INTERVAL))

    def record(self, source: str) -> None:
        """Count a failure of ``source``."""
        if len(self._buckets) >= self.SOURCES and source not in self._buckets:
            # Forget the oldest half: a flood of sources must not grow memory without bound.
            for stale in list(self._buckets)[: self.SOURCES // 2]:
                del self._buckets[stale]
        self._buckets[source] = (self._tokens(source) - 1.0, self._clock())


class Supervisor:
    """Handlers of the agent-facing endpoints, bound to the cluster's PKI and join token."""

    def __init__(self, pki: ClusterPKI, token: str, passwords: NodePasswords) -> None:
        self._pki = pki
        self._token = jointoken.parse(token)
        self._passwords = passwords
        self.failed_joins = FailedJoins()

    def join_token_valid(self, authorization: str) -> bool:
        """True when an ``Authorization`` header proves knowledge of the join token."""
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            try:
                presented = jointoken.parse(value)
            except jointoken.JoinTokenError:
                return False
            if presented.ca_hash and presented.ca_hash != self._token.ca_hash:
                return False
            return presented.secret_matches(self._token.secret)
        if scheme.lower() == "basic" and value:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return user in jointoken.JOIN_USERS and self._token.secret_matches(password)
        return False

    async def cacerts(self, request: web.Request) -> web.Response:
        return web.Response(body=self._pki.ca_bundle(), content_type="application/x-pem-file")

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def connect(self, request: web.Request) -> web.StreamResponse:
        from k3py.cluster.api.tunnel import MAX_FRAME, PROTOCOL
        from k3py.cluster.server.rest.access import user_of
        from k3py.cluster.server.tunnel import TUNNELS

        user = user_of(request)
        node = user.node_name if user is not None else None
        if node is None:
            return _status_response(
                ApiError(403, "Forbidden", f"{CONNECT_PATH} is for node credentials only")
            )
        ws = web.WebSocketResponse(protocols=(PROTOCOL,), heartbeat=30.0, max_msg_size=MAX_FRAME)
        if not ws.can_prepare(request).ok:
            return _status_response(
                bad_request(f"{CONNECT_PATH} is a websocket ({PROTOCOL}); send an upgrade")
            )
        await ws.prepare(request)
        await request.app[TUNNELS].serve(node, ws)
        return ws

    async def node_certificate(self, request: web.Request) -> web.Response:
        try:
            return await self._node_certificate(request)
        except ApiError as error:
            return _status_response(error)

    async def _node_certificate(self, request: web.Request) -> web.Response:
        source = request.remote or ""
        wait = self.failed_joins.refused_for(source)
        if wait:
            raise too_many_requests(wait)
        if not self.join_token_valid(request.headers.get("Authorization", "")):
            # Logged every time: the limit keeps it to a few lines a minute per source.
            self.failed_joins.record(source)
            logger.warning(
                "node certificate request with a wrong join token",
                extra={"fields": {"source": source}},
            )
            raise unauthorized(
                "a node certificate needs the cluster's join token "
                "(Authorization: Bearer <token>); check the agent's --token"
            )
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            raise request_entity_too_large(MAX_REQUEST_BYTES)
        body = await request.content.read(MAX_REQUEST_BYTES + 1)
        if len(body) > MAX_REQUEST_BYTES:
            raise request_entity_too_large(MAX_REQUEST_BYTES)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("the body must be JSON: {nodeName, csr, nodePassword}") from None
        if not isinstance(payload, dict):
            raise bad_request("the body must be a JSON object: {nodeName, csr, nodePassword}")
        node, csr, password = (payload.get(k) for k in ("nodeName", "csr", "nodePassword"))
        if not isinstance(node, str):
            raise bad_request("nodeName must be a string")
        problem = _node_name_problem(node)
        if problem is not None:
            raise bad_request(problem)
        if not isinstance(csr, str) or not csr.strip():
            raise bad_request("csr must be a PEM certificate signing request")
        if not isinstance(password, str) or len(password) < 16:
            raise bad_request("nodePassword must be the node's secret (at least 16 characters)")
        # Check, sign and record run without an await in between, so two requests for the
        # same new node name cannot both register a password.
        known = self._passwords.check(node, password)
        if known is False:
            logger.warning("node password rejected", extra={"fields": {"node": node}})
            raise ApiError(
                403,
                "Forbidden",
                f'node password rejected for node "{node}": another machine already joined with '
                f"this name, or this node was reinstalled; choose a unique node name, or delete "
                f"the old node (kubectl delete node {node}) to let it register anew",
            )
        try:
            certificate = self._pki.sign_csr(csr.encode(), NODE_USER_PREFIX + node, [NODES_GROUP])
        except CSRError as err:
            raise bad_request(str(err)) from None
        if known is None:
            self._passwords.record(node, password)
        return web.json_response(
            {"certificate": certificate.decode(), "caBundle": self._pki.ca_bundle().decode()}
        )


def add_routes(app: web.Application, pki: ClusterPKI, token: str) -> None:
    """Mount the supervisor endpoints on ``app``; ``token`` is the server's full join token."""
    # The node password file sits beside the other credential files of <data-dir>/server.
    passwords = NodePasswords(pki.tls_dir.parent / "cred" / "node-passwd")
    supervisor = Supervisor(pki, token, passwords)
    from k3py.cluster.server.app import DATASTORE

    async def forgetting(app: web.Application) -> AsyncIterator[None]:
        datastore = app.get(DATASTORE)
        task = (
            None
            if datastore is None
            else asyncio.create_task(forget_deleted_nodes(datastore, passwords))
        )
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(forgetting)
    app.router.add_get("/cacerts", supervisor.cacerts)
    app.router.add_get("/ping", supervisor.ping)
    app.router.add_post(NODE_CERTIFICATE_PATH, supervisor.node_certificate)
    app.router.add_get(CONNECT_PATH, supervisor.connect)
    from k3py.cluster import install

    # The installer and the wheel a joining machine installs (the wheel needs the join token).
    install.add_routes(app, supervisor.join_token_valid, pki.tls_dir.parent / "static")
    from k3py.cluster.server.tunnel import TUNNELS, TunnelHub

    hub = app[TUNNELS] = TunnelHub()

    async def close_tunnels(_: web.Application) -> None:
        await hub.close()

    # aiohttp's Signal annotation disagrees with aiosignal's generics; the call is correct.
    app.on_shutdown.append(close_tunnels)  # type: ignore[arg-type]
