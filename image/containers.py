"""Air-gap container images: ``docker save``-format tarballs written without Docker on the host.

An agent image carries, in ``/var/lib/k3py/agent/images/``, the container images its first pods
need when the board has no registry to pull from (as K3s's airgap images folder). The default is
a small HTTP server, busybox's ``httpd`` from Debian's ``busybox-static`` for the board's own
architecture, packaged here as one layer with a deterministic tar (fixed times and owners,
sorted entries), so the tarball is as reproducible as the rest of the image. ``--container-image``
adds tarballs a user saved elsewhere (``docker save -o app.tar app:1``).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from k3py.image.errors import ImageError

DEFAULT_IMAGE = "k3py.local/httpd:latest"
OCI_ARCHITECTURES = {"arm64": ("arm64", ""), "armhf": ("arm", "v7")}
INDEX_HTML = b"<html><body><h1>k3py</h1><p>served by busybox httpd</p></body></html>\n"


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in sorted(entries, key=lambda e: e[0].name):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _info(name: str, epoch: int, *, mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
          size: int = 0, link: str = "") -> tarfile.TarInfo:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.mode, info.type, info.size, info.linkname, info.mtime = mode, kind, size, link, epoch
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def httpd_layer(busybox: Path, epoch: int) -> bytes:
    """One layer: static busybox, ``sh`` and ``httpd`` links, and a page to serve."""
    binary = busybox.read_bytes()
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("bin", epoch, mode=0o755, kind=tarfile.DIRTYPE), None),
        (_info("bin/busybox", epoch, mode=0o755, size=len(binary)), binary),
        (_info("www", epoch, mode=0o755, kind=tarfile.DIRTYPE), None),
        (_info("www/index.html", epoch, size=len(INDEX_HTML)), INDEX_HTML),
        (_info("tmp", epoch, mode=0o1777, kind=tarfile.DIRTYPE), None),
    ]
    for applet in ("sh", "httpd", "ls", "cat", "wget"):
        entries.append((_info(f"bin/{applet}", epoch, kind=tarfile.SYMTYPE, link="busybox"), None))
    return _tar(entries)


def docker_archive(layer: bytes, tag: str, architecture: str, epoch: int, cmd: list[str]) -> bytes:
    """A ``docker save`` tarball (manifest.json, config, one layer) for ``docker load``."""
    arch, variant = OCI_ARCHITECTURES[architecture]
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    created = "1970-01-01T00:00:00Z" if epoch == 0 else _iso(epoch)
    config: dict[str, object] = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
            "ExposedPorts": {"8080/tcp": {}},
        },  # fmt: skip
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "k3py image build"}],
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_dir = hashlib.sha256(diff_id.encode()).hexdigest()
    repository, _, version = tag.rpartition(":")
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_dir}/layer.tar"]}]
    files = {
        "manifest.json": json.dumps(manifest, sort_keys=True).encode(),
        "repositories": json.dumps({repository: {version: layer_dir}}, sort_keys=True).encode(),
        config_name: config_bytes,
        f"{layer_dir}/VERSION": b"1.0",
        f"{layer_dir}/json": json.dumps({"id": layer_dir}, sort_keys=True).encode(),
        f"{layer_dir}/layer.tar": layer,
    }
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info(layer_dir, epoch, mode=0o755, kind=tarfile.DIRTYPE), None)
    ]
    entries += [(_info(name, epoch, size=len(data)), data) for name, data in files.items()]
    return _tar(entries)


def _iso(epoch: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def install_images(
    images_dir: Path, busybox: Path, architecture: str, extra: list[Path], epoch: int
) -> list[str]:
    """Write the default httpd image and copy user tarballs; returns the file names."""
    images_dir.mkdir(parents=True, exist_ok=True)
    layer = httpd_layer(busybox, epoch)
    cmd = ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
    (images_dir / "k3py-httpd.tar").write_bytes(
        docker_archive(layer, DEFAULT_IMAGE, architecture, epoch, cmd)
    )
    names = ["k3py-httpd.tar"]
    for tarball in extra:
        if not tarfile.is_tarfile(tarball):
            raise ImageError(f"--container-image {tarball} is not a tar archive (docker save -o)")
        target = images_dir / tarball.name
        target.write_bytes(tarball.read_bytes())
        names.append(tarball.name)
    return names
