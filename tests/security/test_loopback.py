"""The security pieces behind a real TLS listener on loopback, driven by real TLS clients.

The application here is a minimal stand-in for the API server's own: the supervisor routes, an
authentication middleware that answers 401 Status except on anonymous paths, and ``/api``
echoing the authenticated user.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from k3py.cluster.api import jointoken
from k3py.cluster.api.status import unauthorized
from k3py.cluster.server import supervisor
from k3py.cluster.server.auth import NODE_CERTIFICATE_PATH, Authenticator, is_anonymous_path
from k3py.cluster.server.kubeconfig import write_kubeconfig
from k3py.cluster.server.pki import ClusterPKI, ensure_pki
from k3py.cluster.server.token import ensure_server_token
from tests.security.conftest import key_pem, make_csr

NODE_PASSWORD = "0123456789abcdef0123"


@dataclass
class Server:
    url: str
    pki: ClusterPKI
    token: str
    authenticator: Authenticator
    data_dir: Path


def _app(pki: ClusterPKI, token: str, authenticator: Authenticator) -> web.Application:
    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        user = authenticator.authenticate(request)
        if user is None and not is_anonymous_path(request.path):
            error = unauthorized()
            return web.json_response(error.to_status(), status=error.code)
        request["user"] = user
        return await handler(request)

    async def api(request: web.Request) -> web.Response:
        user = request["user"]
        return web.json_response({"user": user.name, "groups": list(user.groups)})

    app = web.Application(middlewares=[authenticate])
    supervisor.add_routes(app, pki, token)
    app.router.add_get("/api", api)
    return app


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    data_dir = tmp_path / "data"
    pki = ensure_pki(data_dir, [], hostname="board1", addresses=())
    token = ensure_server_token(data_dir, pki.ca_bundle(), None)
    authenticator = Authenticator(pki, data_dir)
    runner = web.AppRunner(_app(pki, token, authenticator), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_ssl_context())
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"https://127.0.0.1:{port}", pki, token, authenticator, data_dir)
    finally:
        await runner.cleanup()


def _anonymous(pki: ClusterPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_cert))


async def _request(
    method: str,
    url: str,
    context: ssl.SSLContext,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, ssl=context, headers=headers, json=body) as response,
    ):
        return response.status, await response.read()


def _status(body: bytes) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(body)
    assert status["kind"] == "Status"
    assert status["status"] == "Failure"
    return status


async def test_cacerts_and_ping_are_anonymous_and_pin_the_token(server: Server) -> None:
    code, body = await _request("GET", server.url + "/cacerts", _anonymous(server.pki))
    assert code == 200
    assert body == server.pki.ca_bundle()
    assert jointoken.parse(server.token).matches_ca(body)
    assert await _request("GET", server.url + "/ping", _anonymous(server.pki)) == (200, b"pong")


async def test_api_without_credentials_is_401_status(server: Server) -> None:
    code, body = await _request("GET", server.url + "/api", _anonymous(server.pki))
    assert code == 401
    assert _status(body)["reason"] == "Unauthorized"
    bad = {"Authorization": "Bearer not-a-token"}
    code, body = await _request("GET", server.url + "/api", _anonymous(server.pki), headers=bad)
    assert code == 401
    assert _status(body)["code"] == 401


async def test_admin_certificate_and_admin_token_identify_the_admin(server: Server) -> None:
    code, body = await _request("GET", server.url + "/api", server.pki.client_ssl_context())
    assert code == 200
    assert json.loads(body) == {
        "user": "system:admin",
        "groups": ["system:masters", "system:authenticated"],
    }
    bearer = {"Authorization": f"Bearer {server.authenticator.admin_token()}"}
    code, body = await _request("GET", server.url + "/api", _anonymous(server.pki), headers=bearer)
    assert code == 200
    assert json.loads(body)["groups"][0] == "system:masters"


async def test_a_certificate_from_another_ca_cannot_connect(server: Server, tmp_path: Path) -> None:
    other = ensure_pki(tmp_path / "other", [], hostname="x", addresses=())
    context = _anonymous(server.pki)
    context.load_cert_chain(other.admin_cert, other.admin_key)
    with pytest.raises(aiohttp.ClientError):
        await _request("GET", server.url + "/api", context)


async def _issue(
    server: Server,
    authorization: str,
    *,
    node: str = "board2",
    password: str = NODE_PASSWORD,
) -> tuple[int, bytes, ec.EllipticCurvePrivateKey]:
    """Ask for a node certificate as an agent does: the key is made here and only its CSR
    is sent."""
    key, csr = make_csr()
    body = {"nodeName": node, "csr": csr.decode(), "nodePassword": password}
    code, answer = await _request(
        "POST",
        server.url + NODE_CERTIFICATE_PATH,
        _anonymous(server.pki),
        headers={"Authorization": authorization},
        body=body,
    )
    assert "PRIVATE KEY" not in json.dumps(body)
    return code, answer, key


async def test_node_certificate_for_the_join_token_keeps_the_key_on_the_node(
    server: Server, tmp_path: Path
) -> None:
    code, answer, key = await _issue(server, f"Bearer {server.token}")
    assert code == 200, answer
    issued = json.loads(answer)
    assert issued["caBundle"].encode() == server.pki.ca_bundle()
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    assert cert.public_key() == key.public_key()

    # The node now authenticates with its own key and the certificate it received.
    (tmp_path / "node.crt").write_text(issued["certificate"])
    (tmp_path / "node.key").write_bytes(key_pem(key))
    context = server.pki.client_ssl_context(tmp_path / "node.crt", tmp_path / "node.key")
    code, body = await _request("GET", server.url + "/api", context)
    assert code == 200
    assert json.loads(body) == {
        "user": "system:node:board2",
        "groups": ["system:nodes", "system:authenticated"],
    }


async def test_node_certificate_accepts_the_bare_secret_and_k3s_basic_auth(
    server: Server,
) -> None:
    secret = jointoken.parse(server.token).secret
    code, _, _ = await _issue(server, f"Bearer {secret}")
    assert code == 200
    basic = base64.b64encode(f"node:{secret}".encode()).decode()
    code, _, _ = await _issue(server, f"Basic {basic}")
    assert code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer wrong-secret",
        "Bearer K10" + "0" * 64 + "::server:{secret}",  # right secret, another cluster's CA
        "Basic " + base64.b64encode(b"admin:{secret}").decode(),
    ],
)
async def test_node_certificate_refuses_a_wrong_token(server: Server, authorization: str) -> None:
    secret = jointoken.parse(server.token).secret
    code, answer, _ = await _issue(server, authorization.replace("{secret}", secret))
    assert code == 401
    assert _status(answer)["reason"] == "Unauthorized"


async def test_node_certificate_refuses_bad_requests(server: Server) -> None:
    auth = f"Bearer {server.token}"
    code, answer, _ = await _issue(server, auth, node="Not_A_Name")
    assert (code, _status(answer)["reason"]) == (400, "BadRequest")
    code, answer, _ = await _issue(server, auth, password="short")
    assert code == 400
    code, answer = await _request(
        "POST",
        server.url + NODE_CERTIFICATE_PATH,
        _anonymous(server.pki),
        headers={"Authorization": auth},
        body={"nodeName": "board2", "csr": "garbage", "nodePassword": NODE_PASSWORD},
    )
    assert code == 400
    assert "CSR" in _status(answer)["message"]


@pytest.mark.parametrize("length", [53, 64, 253])
async def test_node_names_too_long_for_a_certificate_are_refused(
    server: Server, length: int
) -> None:
    code, answer, _ = await _issue(server, f"Bearer {server.token}", node="n" * length)
    assert code == 400, answer
    assert "at most 52 fit in a node certificate" in _status(answer)["message"]


async def test_another_machine_cannot_take_a_joined_nodes_name(server: Server) -> None:
    auth = f"Bearer {server.token}"
    assert (await _issue(server, auth))[0] == 200
    assert (await _issue(server, auth))[0] == 200  # the same node again: renewal
    code, answer, _ = await _issue(server, auth, password="another-machine-password")
    assert code == 403
    assert "kubectl delete node" in _status(answer)["message"]


async def test_tunnel_endpoint_is_for_nodes_only(server: Server) -> None:
    code, answer = await _request(
        "GET", server.url + supervisor.CONNECT_PATH, server.pki.client_ssl_context()
    )
    assert code == 403
    assert "node credentials" in _status(answer)["message"]


def test_anonymous_paths() -> None:
    for path in ("/cacerts", "/ping", "/version", "/healthz", "/livez/ping", "/readyz"):
        assert is_anonymous_path(path), path
    assert is_anonymous_path(NODE_CERTIFICATE_PATH)
    for path in ("/api", "/apis", "/api/v1/pods", "/openapi/v2", supervisor.CONNECT_PATH):
        assert not is_anonymous_path(path), path


async def _kubectl(kubeconfig: Path, *args: str) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/kubectl",
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, out.decode(), err.decode()


@pytest.mark.integration
async def test_real_kubectl_with_the_written_kubeconfig(server: Server, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "k3py.yaml"
    write_kubeconfig(kubeconfig, 0o600, server.url, server.pki)
    code, out, err = await _kubectl(kubeconfig, "get", "--raw", "/api")
    assert code == 0, err
    assert json.loads(out)["user"] == "system:admin"
    # Without the client certificate, kubectl's bearer token decides: 401 Status when wrong.
    doc = yaml.safe_load(kubeconfig.read_text())
    for token, expected in (("wrong", 1), (server.authenticator.admin_token(), 0)):
        doc["users"][0]["user"] = {"token": token}
        kubeconfig.write_text(yaml.safe_dump(doc))
        code, out, err = await _kubectl(kubeconfig, "get", "--raw", "/api")
        assert code == expected, err
        if expected:
            assert "Unauthorized" in err
        else:
            assert json.loads(out)["user"] == "system:admin"
