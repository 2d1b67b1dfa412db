"""The root file system: assembled from packages, configured for an appliance, pruned.

No maintainer script runs; what they would have done for us (users and groups, alternatives,
busybox applet links) is done here from data in ``content.toml``, together with the appliance's
own layout: a read-only root whose mutable paths point into ``/run`` or the data partition
(``/var``), busybox init with a respawning supervisor, and the k3py firmware itself.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from k3py.cli import config_keys
from k3py.image import debfile, firmware
from k3py.image.debian import Package
from k3py.image.errors import ImageError, command_failed

OVERLAY = Path(str(resources.files("k3py.image").joinpath("overlay")))
PYTHON_DIRS = ("usr/lib/python3.13", "usr/lib/python3/dist-packages")
SITE_PACKAGES = "usr/lib/python3/dist-packages"
CONTAINERD_SOCKET = "/run/docker/containerd/containerd.sock"
# containerd as dockerd would start it (its paths, no CRI), without the snapshotters and
# directories dockerd's image store never uses (dockerd keeps images in its own overlay2).
CONTAINERD_CONFIG = f"""version = 2
root = "/var/lib/docker/containerd/daemon"
state = "/run/docker/containerd/daemon"
disabled_plugins = [
  "io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.blockfile",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[debug]
  address = "/run/docker/containerd/containerd-debug.sock"
  level = "info"

[plugins."io.containerd.nri.v1.nri"]
  disable = true
"""

USERS = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
disk:x:6:
kmem:x:15:
dialout:x:20:
docker:x:120:
nogroup:x:65534:
"""


def assemble(root: Path, packages: Iterable[Package], debs: Mapping[str, Path]) -> dict[str, str]:
    """Unpack every package into ``root``; returns each file's owning package."""
    root.mkdir(parents=True, exist_ok=True)
    debfile.create_merged_links(root)
    owners: dict[str, str] = {}
    for package in packages:
        debfile.unpack(debs[package.name], root, package.name, owners)
    return owners


def prune(root: Path, patterns: Iterable[str]) -> int:
    """Delete what an appliance never reads; returns the bytes freed."""
    freed = 0
    for pattern in patterns:
        # glob.glob rather than Path.glob: it also matches a link whose target is absent on
        # the build host (an absolute link into the image's /etc, say), which Path.glob skips.
        for path in sorted(
            map(Path, glob.glob(str(root / pattern), recursive=True, include_hidden=True))
        ):
            if path.is_symlink() or path.is_file():
                freed += path.lstat().st_size
                path.unlink()
            elif path.is_dir():
                freed += sum(f.lstat().st_size for f in path.rglob("*") if not f.is_dir())
                shutil.rmtree(path)
    return freed


def _link(root: Path, path: str, target: str) -> None:
    link = root / path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(target)


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.is_symlink():
        file.unlink()
    file.write_text(text)
    os.chmod(file, mode)


def configure(
    root: Path,
    *,
    role: str,
    console: str,
    applets: Iterable[str],
    alternatives: Mapping[str, str],
    boot_modules: Iterable[str],
    version: str,
    architecture: str,
    board: str,
) -> None:
    """The appliance layout: users, mounts, init and services, links and identity files."""
    for directory in ("proc", "sys", "dev", "run", "tmp", "var", "boot/firmware", "mnt"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)  # noqa: S103 (/tmp is sticky and world-writable)
    shutil.copytree(OVERLAY, root, symlinks=True, dirs_exist_ok=True)

    _write(root, "etc/passwd", USERS)
    _write(root, "etc/group", GROUP)
    # Mutable state lives in /run (rebuilt each boot from k3py.yaml) or on the data partition.
    _link(root, "etc/shadow", "../run/k3py/shadow")
    _link(root, "etc/resolv.conf", "../run/resolv.conf")
    _link(root, "etc/mtab", "../proc/self/mounts")
    _link(root, "etc/k3py", "../var/lib/k3py/etc")
    _link(root, "etc/dropbear", "../var/lib/dropbear")
    _link(root, "root", "var/lib/root")
    _write(root, "etc/hostname", "k3py\n")
    _write(root, "etc/k3py-role", f"{role}\n")
    _write(
        root,
        "usr/lib/os-release",
        f'NAME="k3py"\nID=k3py\nID_LIKE=debian\nVERSION_ID="{version}"\n'
        f'PRETTY_NAME="k3py {version} ({role}, {architecture})"\nVARIANT_ID={role}\n',
    )
    _link(root, "etc/os-release", "../usr/lib/os-release")
    _write(root, "usr/lib/k3py/boot-modules", "\n".join(boot_modules) + "\n")
    # The keys k3py.yaml may set for the role's command (its flags), for the boot
    # configuration: reading them here spares each boot a Python start importing the command
    # line's definitions (half a second of an emulated board's CPU).
    _write(root, "usr/lib/k3py/config-keys", "\n".join(config_keys(role)) + "\n")
    # The agent labels its node with it and checks the boards an OTA bundle names against it.
    _write(root, "usr/lib/k3py/board", f"{board}\n")

    busybox = "usr/bin/busybox"
    if not (root / busybox).exists():
        raise ImageError("busybox is missing from the root file system (content.toml packages)")
    for applet in applets:
        if not any(
            (root / d / applet).is_symlink() or (root / d / applet).exists()
            for d in ("usr/bin", "usr/sbin")
        ):
            _link(root, f"usr/bin/{applet}", "busybox")
    _link(root, "usr/sbin/init", "../bin/busybox")
    _ca_bundle(root)
    for link, target in sorted(alternatives.items()):
        if (root / link).parent.joinpath(target).exists():
            _link(root, link, target)

    services = ["::sysinit:/usr/lib/k3py/rcS"]
    # The runtime wherever content.toml put it: both roles run workloads (a server runs its
    # node's agent unless k3py.yaml says disable-agent). Without Docker's own iptables rules:
    # k3py wires pods itself (cni0, flannel, its nftables table), and the dozens of iptables
    # calls Docker makes at start cost about 30 s of an emulated board's boot. containerd is
    # a service of its own, started beside dockerd: it listens before dockerd, still
    # initialising, dials it. A dockerd that starts containerd itself dials before it
    # listens and waits out gRPC's back-off, 1-2 s of an emulated board's boot.
    if (root / "usr/sbin/dockerd").exists():
        _write(root, "usr/lib/k3py/containerd.toml", CONTAINERD_CONFIG)
        services.append(
            "::respawn:/usr/lib/k3py/supervise containerd /usr/bin/containerd "
            "--config /usr/lib/k3py/containerd.toml"
        )
        services.append(
            f"::respawn:/usr/lib/k3py/supervise dockerd /usr/sbin/dockerd --containerd "
            f"{CONTAINERD_SOCKET} --data-root /var/lib/docker --exec-root /run/docker "
            "--iptables=false --ip6tables=false"
        )
    # Through the firmware launcher (this slot's, which firmware updates never replace): it
    # starts the firmware installed on the data partition, or this slot's k3py when none is,
    # restarts into a new one and rolls a bad one back by itself.
    services.append(
        "::respawn:/usr/lib/k3py/supervise k3py /usr/bin/python3 -m k3py.cluster.ota.launcher "
        f"{role}"
    )
    # A root slot on trial after a system update reboots unless marked good in time.
    services.append("::once:/usr/lib/k3py/trial")
    services.append("::respawn:/usr/lib/k3py/supervise dropbear /usr/sbin/dropbear -F -E -R -p 22")
    services.append(
        f"{console}::respawn:/usr/bin/getty -L -n -l /usr/lib/k3py/console-login "
        f"115200 {console} vt100"
    )
    services += ["::ctrlaltdel:/usr/bin/reboot", "::shutdown:/usr/bin/umount -a -r"]
    _write(root, "etc/inittab", "\n".join(services) + "\n")


def _ca_bundle(root: Path) -> None:
    """The CA bundle and the hashed directory that ca-certificates' maintainer script makes.

    The bundle (``/etc/ssl/certs/ca-certificates.crt``) is what Python's requests, under the
    docker client, and Go programs read. OpenSSL is left without its default file
    (``/usr/lib/ssl/cert.pem``): every default SSL context parses that file whole, and aiohttp
    makes two at import, so the agent and the server each parsed 146 certificates twice at
    start and kept both stores (the server on the ARM64 board: 1.9 MB; about 0.1 s of the
    emulated board's CPU per process) for CAs they never use. OpenSSL finds a public CA in
    the hashed directory (``<subject hash>.0`` links), when a chain is checked, as
    update-ca-certificates lays it out.
    """
    certificates = sorted((root / "usr/share/ca-certificates").rglob("*.crt"))
    if not certificates:
        return
    bundle = "".join(c.read_text().rstrip("\n") + "\n" for c in certificates)
    _write(root, "etc/ssl/certs/ca-certificates.crt", bundle)
    (root / "usr/lib/ssl/cert.pem").unlink(missing_ok=True)
    taken: dict[str, int] = {}
    for certificate in certificates:
        argv = ["openssl", "x509", "-subject_hash", "-noout", "-in", str(certificate)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise command_failed(argv, result.returncode, result.stderr)
        digest = result.stdout.strip()
        number = taken[digest] = taken.get(digest, -1) + 1
        _link(root, f"etc/ssl/certs/{digest}.{number}", f"/{certificate.relative_to(root)}")


def install_firmware(root: Path, wheel: Path) -> list[str]:
    """The firmware's part of the k3py wheel (not the image builder) and a ``k3py`` launcher."""
    installed = firmware.install(root / SITE_PACKAGES, wheel)
    _write(
        root,
        "usr/bin/k3py",
        "#!/usr/bin/python3\nimport sys\n\nfrom k3py.cli import main\n\nsys.exit(main())\n",
        0o755,
    )
    return installed


def compile_bytecode(root: Path, python: list[str]) -> int:
    """Compile every module for the target's interpreter; returns the number of ``.pyc`` files.

    ``python`` runs the same Python version as the target (its magic number matches), natively
    on the build host. Unchecked-hash pycs never stat their sources: the root is read-only and
    replaced only whole, by an update of its slot. Only optimization level 0: the services do
    not run with ``-O``, so ``.opt-1.pyc`` files would be dead weight.
    """
    dirs = [str(root / d) for d in PYTHON_DIRS if (root / d).is_dir()]
    argv = [
        *python, "-I", "-m", "compileall", "-q", "-o", "0",
        "--invalidation-mode", "unchecked-hash", "-s", str(root), "-p", "/", *dirs,
    ]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "0"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise command_failed(argv, result.returncode, result.stdout + result.stderr)
    return sum(1 for d in dirs for _ in Path(d).rglob("*.pyc"))


def clamp_times(root: Path, epoch: int) -> None:
    """Every file's times set to ``SOURCE_DATE_EPOCH``: part of a bit-identical rebuild."""
    for directory, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.utime(Path(directory, name), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))
