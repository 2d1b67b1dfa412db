"""install.sh refuses in one line and installs nothing: a CA that is not the token's, a Python
older than 3.11, an unsupported architecture, dependencies the distribution cannot give.

The script runs directly with its target directories in a temporary root and stubs first on
PATH that record any call that would change the machine (``systemctl``, ``apt-get``); a refusal
must leave both untouched. The "server" is a loopback HTTP server with a CA bundle.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "install" / "install.sh"
CA = b"-----BEGIN CERTIFICATE-----\nnot the cluster's\n-----END CERTIFICATE-----\n"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("systemctl", "apt-get"):
        _stub(stubs, name, f'echo "{name} $*" >> {tmp_path}/calls; exit 1')
    # The checks after the root check are the subject, whoever runs the tests.
    _stub(stubs, "id", '[ "$1" = -u ] && echo 0 || exec /usr/bin/id "$@"')
    return tmp_path


def _install(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": f"{root / 'stubs'}:{os.environ['PATH']}",
        "INSTALL_K3PY_BIN_DIR": str(root / "bin"),
        "INSTALL_K3PY_SYSTEMD_DIR": str(root / "systemd"),
        "INSTALL_K3PY_LIB_DIR": str(root / "lib"),
        **env,
    }
    return subprocess.run(
        ["sh", str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def _assert_refused(root: Path, result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert not (root / "calls").exists(), (root / "calls").read_text()
    for made in ("bin", "systemd", "lib"):
        assert not (root / made).exists()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "cacerts").write_bytes(CA)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_ca_that_is_not_the_tokens_is_refused_before_anything_is_downloaded(
    root: Path, server: str
) -> None:
    other = hashlib.sha256(b"another cluster's CA").hexdigest()
    result = _install(root, K3PY_URL=server, K3PY_TOKEN=f"K10{other}::server:{'s' * 32}")
    _assert_refused(root, result, "does not match the token's hash")
    assert hashlib.sha256(CA).hexdigest() in result.stderr


def test_python_older_than_3_11_is_refused(root: Path) -> None:
    _stub(root / "stubs", "python3", 'case "$*" in *print*) echo 3.9 ;; *) exit 1 ;; esac')
    result = _install(root, INSTALL_K3PY_ARTIFACT="/nonexistent.whl")
    _assert_refused(root, result, "python3 is 3.9: k3py needs Python 3.11 or newer")


@pytest.mark.parametrize("machine", ["mips", "armv6l", "riscv64"])
def test_an_unsupported_architecture_is_refused(root: Path, machine: str) -> None:
    _stub(root / "stubs", "uname", f'[ "$1" = -m ] && echo {machine} || exec /bin/uname "$@"')
    result = _install(root, INSTALL_K3PY_ARTIFACT="/nonexistent.whl")
    _assert_refused(root, result, f"unsupported architecture {machine}")


def test_missing_dependencies_are_named_in_one_line_and_nothing_changes(
    root: Path, tmp_path: Path
) -> None:
    # A python3 without aiohttp; the apt-get stub resolves nothing.
    wheel = tmp_path / "k3py.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("k3py-0.1.0.dist-info/METADATA", "Name: k3py\nVersion: 0.1.0\n")
    _stub(
        root / "stubs",
        "python3",
        'case "$*" in *"import aiohttp"*) exit 1 ;; esac; exec /usr/bin/python3 "$@"',
    )
    result = _install(root, INSTALL_K3PY_ARTIFACT=str(wheel))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("[ERROR] cannot satisfy:")
    assert "python3-aiohttp" in lines[0]
    calls = (root / "calls").read_text().splitlines()
    # Only simulations and the package lists' refresh: no install ran.
    assert all(" -s " in c or c.startswith("apt-get update") for c in calls), calls
    for made in ("bin", "systemd", "lib"):
        assert not (root / made).exists()
