"""install.sh without a server: from a local wheel (air-gapped hosts) and from a fleet's mirror.

``INSTALL_K3PY_ARTIFACT=<wheel>`` installs with nothing but the file; the copy of the script
``make dist`` writes (:func:`tools.dist.stamp_installer`) fetches its wheel from the mirror it
was made for and refuses a wheel whose sha256 is not the one it was made with, before anything
is written. The script runs with its target directories in a temporary root and a ``systemctl``
stub that records its calls (the nspawn test runs the same script on a real systemd).
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.dist import stamp_installer

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "install" / "install.sh"
WHEEL = "k3py-0.1.0-py3-none-any.whl"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _wheel(path: Path, payload: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as archive:  # fixed dates: the same files, the same bytes
        for name, text in (
            ("k3py-0.1.0.dist-info/METADATA", "Name: k3py\nVersion: 0.1.0\n"),
            ("k3py/__init__.py", payload),
        ):
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), text)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _stub(stubs, "systemctl", f'echo "systemctl $*" >> {tmp_path}/calls')
    _stub(stubs, "apt-get", f'echo "apt-get $*" >> {tmp_path}/calls; exit 1')
    _stub(stubs, "id", '[ "$1" = -u ] && echo 0 || exec /usr/bin/id "$@"')
    # The distribution's python3 with k3py's dependencies: this test environment's.
    _stub(stubs, "python3", f'exec {sys.executable} "$@"')
    return tmp_path


def _install(root: Path, script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": f"{root / 'stubs'}:{os.environ['PATH']}",
        "INSTALL_K3PY_BIN_DIR": str(root / "bin"),
        "INSTALL_K3PY_SYSTEMD_DIR": str(root / "systemd"),
        "INSTALL_K3PY_LIB_DIR": str(root / "lib"),
        "K3PY_RUNTIME": "fake",  # no Docker engine is needed to check the files
        **env,
    }
    return subprocess.run(
        ["sh", str(script)], env=environ, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "mirror"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_local_wheel_installs_the_unit_and_lists_every_file(root: Path, tmp_path: Path) -> None:
    wheel = _wheel(tmp_path / WHEEL)
    result = _install(
        root,
        SCRIPT,
        INSTALL_K3PY_ARTIFACT=str(wheel),
        INSTALL_K3PY_EXEC="--docker --node-ip=192.0.2.1 --write-kubeconfig-mode 644",
        K3PY_TOKEN="a-secret",
    )
    assert result.returncode == 0, result.stderr
    files = (root / "lib" / "files").read_text().split()
    assert set(files) == {
        f"{root}/bin/",
        f"{root}/bin/k3py",
        f"{root}/bin/k3py-killall.sh",
        f"{root}/bin/k3py-uninstall.sh",
        f"{root}/lib/",
        f"{root}/lib/lib",
        f"{root}/lib/{WHEEL}",
        f"{root}/systemd/",
        f"{root}/systemd/k3py.service",
        f"{root}/systemd/k3py.service.env",
    }
    unit = (root / "systemd" / "k3py.service").read_text()
    assert "Type=notify" in unit
    assert "'--node-ip=192.0.2.1'" in unit
    env_file = root / "systemd" / "k3py.service.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert "K3PY_TOKEN=a-secret" in env_file.read_text().splitlines()
    calls = (root / "calls").read_text().splitlines()
    assert calls == ["systemctl daemon-reload", "systemctl enable k3py", "systemctl restart k3py"]


def test_the_mirrors_installer_fetches_its_wheel_and_refuses_another(
    root: Path, tmp_path: Path, mirror: tuple[str, Path]
) -> None:
    url, served = mirror
    wheel = _wheel(served / WHEEL)
    script = tmp_path / "install.sh"
    script.write_text(stamp_installer(SCRIPT.read_text(), wheel, url))

    _wheel(served / WHEEL, payload="# not the release the installer was made for\n")
    refused = _install(root, script, INSTALL_K3PY_SKIP_START="true")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "this installer was made for" in refused.stderr
    for made in ("bin", "systemd", "lib"):
        assert not (root / made).exists()

    _wheel(served / WHEEL)
    (root / "calls").unlink(missing_ok=True)
    result = _install(root, script, INSTALL_K3PY_SKIP_START="true")
    assert result.returncode == 0, result.stderr
    assert (root / "lib" / WHEEL).read_bytes() == wheel.read_bytes()
    calls = (root / "calls").read_text().splitlines()
    assert calls == ["systemctl daemon-reload", "systemctl enable k3py"]
