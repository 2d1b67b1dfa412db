"""The join endpoint against guessing: wrong join tokens are logged and, after a few, a source
must wait (429 with Retry-After); a short --token draws a warning at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from k3py.cluster.server.supervisor import FailedJoins
from k3py.cluster.server.token import ensure_server_token
from tests.security.test_loopback import Server, _issue, _status, server

__all__ = ["server"]  # the fixture, shared with the loopback tests


async def test_guessing_the_join_token_is_slowed_down_and_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="k3py")
    codes = [(await _issue(server, f"Bearer guess-{n}"))[0] for n in range(FailedJoins.BURST + 5)]
    assert codes[: FailedJoins.BURST] == [401] * FailedJoins.BURST
    assert set(codes[FailedJoins.BURST :]) == {429}
    # Even the right token waits its turn from a source that was guessing.
    code, answer, _ = await _issue(server, f"Bearer {server.token}")
    assert code == 429
    assert _status(answer)["reason"] == "TooManyRequests"
    wrong = [r for r in caplog.records if "wrong join token" in r.getMessage()]
    assert len(wrong) == FailedJoins.BURST


def test_a_source_may_try_again_after_waiting() -> None:
    now = [0.0]
    joins = FailedJoins(clock=lambda: now[0])
    for _ in range(FailedJoins.BURST):
        assert joins.refused_for("192.0.2.1") == 0
        joins.record("192.0.2.1")
    assert joins.refused_for("192.0.2.1") > 0
    assert joins.refused_for("192.0.2.2") == 0  # other sources are not affected
    now[0] += FailedJoins.INTERVAL
    assert joins.refused_for("192.0.2.1") == 0


def test_a_short_token_draws_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="k3py")
    ensure_server_token(tmp_path, b"ca", "secret")
    assert any("at least 16" in r.getMessage() for r in caplog.records)
    caplog.clear()
    ensure_server_token(tmp_path / "b", b"ca", "0123456789abcdef0123")
    assert not any("at least 16" in r.getMessage() for r in caplog.records)
