"""The server distributes k3py itself: the installer script and the wheel it installs.

A machine that already runs Linux joins with one line, as with K3s but from the cluster's own
server, so a fleet needs no internet access beyond its distribution's packages::

    curl -sfL --cacert ca.crt https://SERVER:6443/static/install.sh \\
        | K3PY_URL=https://SERVER:6443 K3PY_TOKEN=K10… sh -

- ``GET /static/install.sh``: the POSIX installer (this package's ``install.sh``), anonymous: it
  holds no secret and it verifies the server's CA against the token's hash before it trusts
  anything else it downloads.
- ``GET /static/k3py.whl`` and ``GET /static/k3py-<version>-py3-none-any.whl``: the wheel of the
  k3py this server runs. It needs the join token (``Authorization: Bearer <token>``, as the node
  certificate endpoint), the credential the joining machine has anyway.

The wheel served is, in order: the one the installer kept beside the unpacked package
(``/usr/lib/k3py/k3py-<version>-py3-none-any.whl``), the wheel file pip installed this k3py from,
the wheel of the source checkout it runs from (built once, cached under the data dir), or the
installed files packed back into a wheel (see :mod:`k3py.image.firmware`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

import k3py
from k3py import __version__

logger = logging.getLogger("k3py.server.install")

SCRIPT_PATH = "/static/install.sh"
WHEEL_PATH = "/static/k3py.whl"
STATIC_PREFIX = "/static/"


def wheel_name(version: str = __version__) -> str:
    return f"k3py-{version}-py3-none-any.whl"


def script() -> bytes:
    """The installer script as the package ships it."""
    return resources.files(__name__).joinpath("install.sh").read_bytes()


def _beside_package() -> Path | None:
    """The wheel the installer keeps next to the package it unpacked (``<prefix>/lib/k3py``)."""
    candidate = Path(k3py.__file__).resolve().parent.parent.parent / wheel_name()
    return candidate if candidate.is_file() else None


def find_wheel(cache_dir: Path) -> Path:
    """The wheel of the running k3py (see the module's docstring); may build it (slow, once)."""
    beside = _beside_package()
    if beside is not None:
        return beside
    try:
        from k3py.image import firmware
    except ImportError:  # a board image carries only the firmware, not the wheel's tools
        raise LookupError("this server's k3py was not installed from a wheel") from None
    original = firmware.installed_wheel()
    if original is not None:
        return original
    tree = firmware.installed_tree()
    if tree is not None:
        return firmware.build_wheel(tree, cache_dir)
    return firmware.pack_installed(cache_dir)


class _Static:
    def __init__(self, token_valid: Callable[[str], bool], cache_dir: Path) -> None:
        self._token_valid = token_valid
        self._cache_dir = cache_dir
        self._wheel: Path | None = None
        self._lock = asyncio.Lock()

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(body=script(), content_type="text/x-shellscript")

    async def wheel(self, request: web.Request) -> web.StreamResponse:
        from k3py.cluster.api.status import ApiError, unauthorized

        try:
            if not self._token_valid(request.headers.get("Authorization", "")):
                raise unauthorized(
                    "the k3py wheel needs the cluster's join token (Authorization: Bearer <token>)"
                )
            name = request.match_info.get("name", "k3py.whl")
            if name not in ("k3py.whl", wheel_name()):
                raise ApiError(
                    404,
                    "NotFound",
                    f"this server runs k3py {__version__}: it serves {wheel_name()}",
                )
            async with self._lock:
                if self._wheel is None or not self._wheel.is_file():
                    try:
                        self._wheel = await asyncio.to_thread(find_wheel, self._cache_dir)
                    except Exception as err:
                        logger.warning("no wheel to serve", extra={"fields": {"error": str(err)}})
                        raise ApiError(
                            404, "NotFound", f"this server has no k3py wheel to serve: {err}"
                        ) from None
            return web.FileResponse(
                self._wheel,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": f'attachment; filename="{wheel_name()}"',
                },
            )
        except ApiError as error:
            return web.json_response(error.to_status(), status=error.code)


def add_routes(app: web.Application, token_valid: Callable[[str], bool], cache_dir: Path) -> None:
    """Mount ``/static/…``; ``token_valid`` checks an ``Authorization`` header's join token."""
    static = _Static(token_valid, cache_dir)
    app.router.add_get(SCRIPT_PATH, static.script)
    app.router.add_get(WHEEL_PATH, static.wheel)
    app.router.add_get(STATIC_PREFIX + "{name:k3py-[^/]+\\.whl}", static.wheel)
