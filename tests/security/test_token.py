"""The join token: K3s's format, CA pinning, storage across restarts, and ``k3py token``."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from k3py import cli
from k3py.cluster.api import jointoken
from k3py.cluster.server import token
from k3py.cluster.server.pki import ClusterPKI

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA_HASH = hashlib.sha256(CA).hexdigest()


def test_full_token_round_trips_and_pins_the_ca() -> None:
    text = f"K10{CA_HASH}::server:s3cret"
    parsed = jointoken.parse(text)
    assert parsed == jointoken.JoinToken(secret="s3cret", ca_hash=CA_HASH, user="server")
    assert parsed.format() == text
    assert parsed.matches_ca(CA)
    assert not parsed.matches_ca(CA + b"\n")
    assert jointoken.server_token(CA, "s3cret") == text


def test_bare_secret_and_k3s_variants() -> None:
    bare = jointoken.parse("  mysecret\n")
    assert bare == jointoken.JoinToken(secret="mysecret")
    assert not bare.matches_ca(CA)  # a bare secret pins nothing
    assert jointoken.parse(f"K10{CA_HASH}::abc").user == "server"
    assert jointoken.parse(f"K10{CA_HASH.upper()}::node:abc").ca_hash == CA_HASH
    assert jointoken.parse(f"K10{CA_HASH}::node:abc").user == "node"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("K10abc", "K10<ca-hash>::"),
        ("K10" + "z" * 64 + "::server:x", "64 hex digits"),
        (f"K10{CA_HASH}::server:", "secret is empty"),
        ("has space", "spaces"),
    ],
)
def test_malformed_tokens_are_refused(text: str, message: str) -> None:
    with pytest.raises(jointoken.JoinTokenError, match=message):
        jointoken.parse(text)


def test_first_start_creates_a_private_token_and_restarts_reuse_it(tmp_path: Path) -> None:
    created = token.ensure_server_token(tmp_path, CA, None)
    parsed = jointoken.parse(created)
    assert parsed.matches_ca(CA)
    assert len(parsed.secret) == 32
    path = tmp_path / "server" / "token"
    assert path.read_text() == created + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token.ensure_server_token(tmp_path, CA, None) == created
    assert token.read_server_token(tmp_path) == created


def test_given_token_keeps_its_secret(tmp_path: Path) -> None:
    assert token.ensure_server_token(tmp_path, CA, "mysecret") == f"K10{CA_HASH}::server:mysecret"
    full = f"K10{CA_HASH}::server:other"
    assert token.ensure_server_token(tmp_path, CA, full) == full
    assert token.ensure_server_token(tmp_path, CA, None) == full  # stored one reused


def test_given_token_for_another_cluster_is_refused(tmp_path: Path) -> None:
    foreign = "K10" + "0" * 64 + "::server:mysecret"
    with pytest.raises(token.TokenError, match="another cluster CA"):
        token.ensure_server_token(tmp_path, CA, foreign)


def test_new_ca_keeps_the_secret_and_updates_the_pin(tmp_path: Path) -> None:
    first = jointoken.parse(token.ensure_server_token(tmp_path, CA, None))
    second = jointoken.parse(token.ensure_server_token(tmp_path, b"other CA", None))
    assert second.secret == first.secret
    assert second.matches_ca(b"other CA")


def test_rotate_replaces_the_secret(tmp_path: Path) -> None:
    old = jointoken.parse(token.ensure_server_token(tmp_path, CA, None))
    new = jointoken.parse(token.rotate_server_token(tmp_path, CA))
    assert new.secret != old.secret
    assert token.read_server_token(tmp_path) == new.format()
    assert token.rotate_server_token(tmp_path, CA, "chosen") == f"K10{CA_HASH}::server:chosen"


def test_k3py_token_prints_the_stored_token(
    pki: ClusterPKI, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = token.ensure_server_token(data_dir, pki.ca_bundle(), None)
    assert cli.main(["token", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out == stored + "\n"
    assert cli.main(["token", "rotate", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr()
    rotated = jointoken.parse(out.out.strip())
    assert rotated.matches_ca(pki.ca_bundle())
    assert rotated.secret != jointoken.parse(stored).secret
    assert "restart 'k3py server'" in out.err


def test_k3py_token_without_a_server_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["token", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"k3py: error: no join token at {tmp_path}/server/token")
    assert cli.main(["token", "rotate", "--data-dir", str(tmp_path)]) == 1
    assert "start 'k3py server'" in capsys.readouterr().err
