"""The server's store of OTA bundles: uploads by administrators, downloads by nodes.

``PUT /ota/v1/bundles/<name>`` stores a bundle (streamed to disk, switched into place by
rename only once complete, so a cut upload never leaves a bundle behind); ``GET
/ota/v1/bundles`` lists the stored bundles' manifests; ``GET /ota/v1/bundles/<name>`` serves
one with HTTP Range (aiohttp's ``FileResponse``), so an interrupted download resumes where it
stopped and a system update fetches only the blocks a board lacks. The server checks that an
upload is a well-formed bundle and names it by its manifest, but does not need the signing
key: boards verify the signature against the key baked into their image. Access: these are
non-resource URLs, so ``system:masters`` may do everything and nodes may read (``auth``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.ota.bundle import BundleError, bundle_name, unverified_manifest
from k3py.cluster.server.settings import ServerSettings

PREFIX = "/ota/v1/bundles"
NAME = re.compile(r"[a-z0-9][a-z0-9.+_-]{0,99}\.k3pyb")
BUNDLES_DIR: web.AppKey[Path] = web.AppKey("ota_bundles_dir", Path)


def _directory(request: web.Request) -> Path:
    return request.app[BUNDLES_DIR]


def _stored(request: web.Request) -> Path:
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise status.bad_request(f"{name!r} is not a bundle name (<kind>-<version>.k3pyb)")
    path = _directory(request) / name
    if not path.is_file():
        raise status.not_found("ota.k3py.io", "bundles", name)
    return path


async def list_bundles(request: web.Request) -> web.Response:
    items = []
    for path in sorted(_directory(request).glob("*.k3pyb")):
        try:
            manifest = unverified_manifest(path)
        except BundleError:
            continue
        entry = {"name": path.name, "size": path.stat().st_size}
        items.append({**entry, "manifest": manifest.to_json()})
    return web.json_response({"items": items})


async def get_bundle(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(_stored(request), headers={"Content-Type": "application/x-tar"})


async def put_bundle(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise status.bad_request(f"{name!r} is not a bundle name (<kind>-<version>.k3pyb)")
    directory = _directory(request)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{name}.{os.getpid()}.{id(request)}.partial"
    try:
        with partial.open("wb") as file:
            async for chunk in request.content.iter_chunked(1 << 20):
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        try:
            manifest = unverified_manifest(partial)
        except BundleError as err:
            raise status.bad_request(f"the upload is not a bundle: {err}") from None
        if bundle_name(manifest) != name:
            raise status.bad_request(f"the bundle's manifest names it {bundle_name(manifest)}")
        partial.replace(directory / name)
    finally:
        partial.unlink(missing_ok=True)
    return web.json_response({"name": name, "manifest": manifest.to_json()}, status=201)


async def delete_bundle(request: web.Request) -> web.Response:
    path = _stored(request)
    path.unlink()
    return web.json_response({"name": path.name, "deleted": True})


def add_routes(app: web.Application, settings: ServerSettings) -> None:
    app[BUNDLES_DIR] = settings.data_dir / "server" / "ota" / "bundles"
    app.router.add_get(PREFIX, list_bundles)
    app.router.add_get(PREFIX + "/{name}", get_bundle)
    app.router.add_put(PREFIX + "/{name}", put_bundle)
    app.router.add_delete(PREFIX + "/{name}", delete_bundle)
