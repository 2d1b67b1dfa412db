"""The wheel as a new user gets it: a fresh virtual environment outside the tree, an empty
working directory. The plain wheel runs ``k3py server``; ``k3py image build`` names the missing
extra; with ``[image]`` it builds a board image whose firmware is that very wheel's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from k3py.image import firmware
from tests.image.builds import cache_dir, firmware_snapshot
from tests.processes import stop_process

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(cwd)}  # fmt: skip
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _serve_once(k3py: Path, work: Path) -> None:
    """``k3py server`` answers ``/ping`` over TLS (its own CA), then stops on SIGTERM."""
    kubeconfig = work / "kubeconfig.yaml"
    argv = [str(k3py), "server", "--data-dir", str(work / "data"), "--bind-address", "127.0.0.1",
            "--https-listen-port", "0", "--write-kubeconfig", str(kubeconfig),
            "--disable-agent"]  # fmt: skip
    log = work / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not kubeconfig.exists():
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        context = ssl.create_default_context(cadata=ca)
        context.check_hostname = False  # the certificate names the node, the URL an address
        with urllib.request.urlopen(f"{cluster['server']}/ping", context=context) as answer:
            assert answer.status == 200
    finally:
        stop_process(server)
    assert server.returncode == 0, log.read_text()


def test_wheel_outside_the_tree_serves_and_builds_an_image(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    wheel = firmware_snapshot(request, tmp_path_factory)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, k3py = venv / "bin/python", venv / "bin/k3py"
    empty = tmp_path / "empty"
    empty.mkdir()

    installed = _run([str(python), "-m", "pip", "install", "-q", str(wheel)], empty)
    assert installed.returncode == 0, installed.stderr
    assert _run([str(python), "-c", "import tools"], empty).returncode != 0  # not shipped
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    _serve_once(k3py, server_dir)
    missing = _run([str(k3py), "image", "build", "--board", "qemu-virt-arm64", "--role", "agent"],
                   empty)  # fmt: skip
    assert (missing.returncode, missing.stderr.strip().splitlines()) == (
        1,
        ["k3py: error: 'k3py image' needs k3py's [image] extra (no module 'jinja2'): "
         "pip install 'k3py[image]'"],
    )  # fmt: skip

    extra = _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[image]"], empty)
    assert extra.returncode == 0, extra.stderr
    out = tmp_path / "out"
    built = _run(
        [str(k3py), "image", "build", "--board", "qemu-virt-arm64", "--role", "agent",
         "--out", str(out), "--cache-dir", str(cache_dir()),
         "--work-dir", str(tmp_path / "work")],
        empty,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert (out / "qemu-virt-arm64-agent.img").stat().st_size > 0
    assert sorted(os.listdir(empty)) == []  # nothing written where it ran
    manifest = json.loads((out / "qemu-virt-arm64-agent.manifest.json").read_text())
    # The image's firmware is the installed wheel itself, not a copy of a tree.
    assert manifest["firmware"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert manifest["firmware"]["source"] == "installed wheel"
    names = zipfile.ZipFile(wheel).namelist()
    assert set(firmware.firmware_members(wheel)) <= set(manifest["firmware"]["files"])
    assert not [f for f in manifest["firmware"]["files"] if f.startswith("k3py/image/")]
    assert any(n.startswith("k3py/board/") for n in names)
