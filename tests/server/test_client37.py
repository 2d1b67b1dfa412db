"""The official client 37.x (pydantic models) against a real ``k3py server``.

Each test is one reproduction from the client's point of view, run in a subprocess whose
``PYTHONPATH`` puts ``.venv/k8s37`` (installed by ``make venv``) before the venv's 32.x; see
:mod:`tests.server.client37_checks`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.process import ServerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENT37 = ROOT / ".venv" / "k8s37"


def run_client37(kubeconfig: Path, *checks: str, timeout: float = 60) -> str:
    """Run ``checks`` of :mod:`tests.server.client37_checks` with client 37; their output."""
    if not (CLIENT37 / "kubernetes").is_dir():
        raise AssertionError(f"the kubernetes 37.x client is missing from {CLIENT37}: make venv")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CLIENT37), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "tests.server.client37_checks", str(kubeconfig), *checks],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "kubernetes client 37." in result.stdout
    return result.stdout


def test_create_daemon_set_and_replica_set_parse(cluster: ServerProcess) -> None:
    out = run_client37(cluster.kubeconfig, "create_daemon_set", "create_replica_set")
    assert "ok create_replica_set" in out


def test_typed_watch_of_daemon_sets(cluster: ServerProcess) -> None:
    run_client37(cluster.kubeconfig, "watch_daemon_sets")


def test_delete_service_and_service_account_return_the_object(cluster: ServerProcess) -> None:
    out = run_client37(cluster.kubeconfig, "delete_service", "delete_service_account")
    assert "ok delete_service_account" in out
