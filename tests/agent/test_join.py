"""Joining: the CA pin is checked before anything is trusted; credentials make restarts
token-free. Unit tests use a plain HTTP stand-in for ``/cacerts``; the integration test uses
the real ``k3py server`` and ``k3py agent`` processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from k3py.cluster.agent.errors import JoinError
from k3py.cluster.agent.node import identity
from k3py.cluster.agent.settings import AgentSettings
from k3py.cluster.api import jointoken
from k3py.cluster.server.pki import ensure_pki
from tests.agent.cluster import Server, unique

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


@pytest.fixture
async def cacerts_server() -> AsyncIterator[tuple[str, list[str]]]:
    requests: list[str] = []

    async def cacerts(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.Response(body=CA)

    async def certificate(request: web.Request) -> web.Response:
        requests.append(request.path)
        return web.json_response({"certificate": "nope"}, status=500)

    app = web.Application()
    app.router.add_get("/cacerts", cacerts)
    app.router.add_post(identity.CERTIFICATE_PATH, certificate)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), requests
    finally:
        await server.close()


def settings(tmp_path: Path, server: str, token: str | None) -> AgentSettings:
    return AgentSettings(
        server_url=server,
        token=token,
        token_file=None,
        data_dir=tmp_path,
        node_name="edge-1",
        join_timeout_seconds=2,
    )


async def test_a_token_pinning_another_ca_is_refused_before_any_request(
    tmp_path: Path, cacerts_server: tuple[str, list[str]]
) -> None:
    url, requests = cacerts_server
    wrong = jointoken.JoinToken(secret="s3cret", ca_hash="0" * 64).format()
    with pytest.raises(JoinError, match="pins"):
        await identity.ensure_identity(settings(tmp_path, url, wrong))
    # Only the CA was fetched; nothing was sent, nothing was created.
    assert requests == ["/cacerts"]
    assert not (tmp_path / "agent").exists()


async def test_the_right_pin_goes_on_to_ask_for_a_certificate(
    tmp_path: Path, cacerts_server: tuple[str, list[str]]
) -> None:
    url, requests = cacerts_server
    token = jointoken.server_token(CA, "s3cret")
    # The stand-in speaks plain HTTP, so the certificate request fails at TLS or at its answer.
    with pytest.raises(JoinError):
        await identity.ensure_identity(settings(tmp_path, url, token))
    assert requests[0] == "/cacerts"


async def test_a_server_address_its_certificate_does_not_name_says_tls_san(
    tmp_path: Path,
) -> None:
    pki = ensure_pki(tmp_path / "data", [], hostname="board1", addresses=["127.0.0.1"])
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    # 127.0.0.2 is loopback too, but the certificate names only 127.0.0.1.
    site = web.TCPSite(runner, "127.0.0.2", 0, ssl_context=pki.server_ssl_context())
    await site.start()
    try:
        port = runner.addresses[0][1]
        with pytest.raises(JoinError, match="--tls-san"):
            await identity._request_certificate(
                f"https://127.0.0.2:{port}", pki.ca_bundle(), "t", "edge-1", "csr", "pw"
            )
    finally:
        await runner.cleanup()


async def test_a_bare_secret_is_refused(
    tmp_path: Path, cacerts_server: tuple[str, list[str]]
) -> None:
    with pytest.raises(JoinError, match="bare secret"):
        await identity.ensure_identity(settings(tmp_path, cacerts_server[0], "s3cret"))


@pytest.mark.parametrize("server", ["https://:6443", "https://edge.example:port"])
async def test_a_server_url_without_a_host_or_port_is_refused_at_once(
    tmp_path: Path, server: str
) -> None:
    token = jointoken.server_token(CA, "s3cret")
    # Said at once, not after retrying until the join's deadline as for an absent server.
    with pytest.raises(JoinError, match="not a usable URL"):
        await identity.ensure_identity(settings(tmp_path, server, token))


async def test_no_credentials_and_no_token_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(JoinError, match="--token"):
        await identity.ensure_identity(settings(tmp_path, "https://192.0.2.1:6443", None))


async def test_stored_credentials_need_no_token_and_no_server(tmp_path: Path) -> None:
    directory = tmp_path / "agent"
    directory.mkdir()
    for name in (identity.CA_FILE, identity.CERT_FILE, identity.KEY_FILE):
        (directory / name).write_bytes(b"x")
    (directory / identity.NAME_FILE).write_text("edge-1\n")
    (directory / identity.SERVER_FILE).write_text("https://192.0.2.1:6443\n")
    found = await identity.ensure_identity(settings(tmp_path, "", None))
    assert found.node_name == "edge-1"
    assert found.server_url == "https://192.0.2.1:6443"


@pytest.mark.parametrize("openssl", [True, False], ids=["openssl", "python"])
async def test_the_node_key_stays_private_and_the_csr_names_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, openssl: bool
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not openssl:
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    key_path = tmp_path / "client-kubelet.key.new"
    assert identity.csr_command(key_path, "edge-1")[0].endswith("openssl") == openssl
    csr = x509.load_pem_x509_csr((await identity._make_csr(key_path, "edge-1")).encode())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=system:node:edge-1,O=system:nodes"
    assert key_path.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert key.public_key() == csr.public_key()
    with pytest.raises(JoinError, match="at most 52 fit"):
        await identity._make_csr(key_path, "n" * 60)


async def test_credentials_torn_by_a_power_cut_make_the_node_join_again(
    tmp_path: Path, cacerts_server: tuple[str, list[str]]
) -> None:
    url, requests = cacerts_server
    directory = tmp_path / "agent"
    directory.mkdir()
    (directory / identity.CA_FILE).write_bytes(CA)
    (directory / identity.CERT_FILE).write_bytes(b"")  # renamed in, its data never written
    (directory / identity.KEY_FILE).write_bytes(b"")
    (directory / identity.NAME_FILE).write_text("edge-1\n")
    (directory / identity.SERVER_FILE).write_text(url + "\n")
    token = jointoken.server_token(CA, "s3cret")
    # The stand-in refuses the certificate; what matters is that the node asked again.
    with pytest.raises(JoinError):
        await identity.ensure_identity(settings(tmp_path, url, token))
    assert requests[0] == "/cacerts"


def test_with_node_id_is_stable(tmp_path: Path) -> None:
    base = settings(tmp_path, "https://192.0.2.1:6443", None)
    with_id = base._replace(with_node_id=True)
    first = identity.node_name(with_id)
    assert first.startswith("edge-1-")
    assert identity.node_name(with_id) == first


@pytest.mark.integration
def test_agent_with_a_wrong_ca_hash_exits_with_a_clear_message(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.start()
    try:
        good = jointoken.parse(server.token)
        wrong = jointoken.JoinToken(secret=good.secret, ca_hash="f" * 64).format()
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "k3py",
                "agent",
                "--server",
                server.https_url,
                "--token",
                wrong,
                "--data-dir",
                str(tmp_path / "agent-data"),
                "--node-name",
                unique("intruder"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0
        assert "k3py: error:" in result.stderr
        assert "does not match" in result.stderr or "pins" in result.stderr
        assert "Refusing to join" in result.stderr
        assert time.monotonic() - started < 30
        nodes = server.kubectl("get", "nodes", "-o", "name").stdout
        assert "intruder" not in nodes
    finally:
        server.stop()
