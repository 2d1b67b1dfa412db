"""The docker tier's test image: a busybox root filesystem from Debian's ``busybox-static``.

Nothing is pulled: the image is assembled from ``/bin/busybox`` (every applet as a symlink, a
passwd file, a web root) and given to ``docker import`` once per machine. ``busybox httpd -f``
serves HTTP, ``sh -c`` runs scripts; that is enough to exercise pods, probes, logs and exec.
"""

from __future__ import annotations

import fcntl
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

TEST_IMAGE = "k3py-test/busybox:1"
BUSYBOX = Path("/bin/busybox")
_LOCK = Path("/tmp/k3py-test-image.lock")


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def rootfs_tar() -> bytes:
    applets = subprocess.run(
        [str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "www", "root"):
            _add_dir(tar, directory)
        _add_dir(tar, "tmp", 0o1777)
        _add(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in applets:
            if applet == "bin/busybox":
                continue
            link = tarfile.TarInfo(applet)
            link.type = tarfile.SYMTYPE
            link.linkname = "/bin/busybox"
            tar.addfile(link)
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        _add(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        _add(tar, "www/index.html", b"hello from k3py\n")
    return buffer.getvalue()


def image_present(reference: str = TEST_IMAGE) -> bool:
    result = subprocess.run(
        ["docker", "image", "inspect", reference], capture_output=True, check=False
    )
    return result.returncode == 0


def ensure_test_image(reference: str = TEST_IMAGE) -> str:
    """Import the busybox test image unless the engine has it; returns its reference."""
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not image_present(reference):
            subprocess.run(
                ["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", reference],
                input=rootfs_tar(),
                check=True,
                capture_output=True,
            )
    return reference


def docker_available() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_tier() -> list[pytest.MarkDecorator]:
    """The marks of a test that drives a real Docker engine: skipped when none answers."""
    return [
        pytest.mark.docker,
        pytest.mark.skipif(
            not docker_available(), reason="needs a Docker engine (make test starts one)"
        ),
    ]
