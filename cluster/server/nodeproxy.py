"""``pods/log`` and ``pods/exec``: served by the pod's node, reached through its agent tunnel.

``kubectl logs`` is a GET whose body streams (``follow``, ``tailLines``, ``sinceSeconds``,
``sinceTime``, ``timestamps``, ``previous``, ``limitBytes``, ``container``); the proxy opens a
``logs`` stream on the node's tunnel and copies its output into the response. ``kubectl exec``
upgrades to a websocket speaking Kubernetes' channel protocol (``v5.channel.k8s.io``, or
``v4``): each binary message is ``[channel][payload]`` with 0 stdin, 1 stdout, 2 stderr, 3 the
final Status, 4 terminal resize (``{"Width": w, "Height": h}``) and, in v5, 255 to close a
channel (kubectl's end of stdin). The exit code travels in the final Status as kubectl expects
(``NonZeroExitCode`` with an ``ExitCode`` cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server import spdyexec
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import RequestTarget
from k3py.cluster.server.tunnel import TUNNELS, NodeStream, NodeTunnel
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.server.nodeproxy")

PODS = by_kind("v1", "Pod")
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_CLOSE_CHANNEL = 255
_RESIZE_CHANNEL = 4
_ERROR_CHANNEL = 3


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in {"1", "true", "yes"}


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise status.bad_request(f"{name} must be an integer, not {value!r}") from None


async def _pod_and_tunnel(
    request: web.Request, target: RequestTarget
) -> tuple[dict[str, Any], str, NodeTunnel]:
    assert PODS is not None
    assert target.name is not None
    pod = await request.app[REST].objects.get(PODS, target.namespace, target.name)
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node:
        raise status.bad_request(f"pod {target.name} does not have a host assigned")
    names = [c.get("name") for c in spec.get("containers") or []]
    init_names = [c.get("name") for c in spec.get("initContainers") or []]
    container = request.query.get("container", "")
    if not container:
        if len(names) != 1:
            raise status.bad_request(
                f"a container name must be specified for pod {target.name}, choose one of:"
                f" [{' '.join(str(n) for n in names)}]"
            )
        container = str(names[0])
    elif container not in names and container not in init_names:
        raise status.bad_request(f"container {container} is not valid for pod {target.name}")
    hub = request.app.get(TUNNELS)
    node_tunnel = hub.get(str(node)) if hub is not None else None
    if node_tunnel is None:
        raise status.ApiError(
            503,
            "ServiceUnavailable",
            f"the agent of node {node} is not connected to this server; check that it runs",
        )
    return pod, container, node_tunnel


def _pod_params(pod: dict[str, Any], container: str) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    return {
        "namespace": meta.get("namespace", "default"),
        "pod": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "container": container,
    }


async def _watch_disconnect(request: web.Request, stream: NodeStream) -> None:
    """End a quiet stream (``logs -f``) once its client went away."""
    while True:
        await asyncio.sleep(2.0)
        transport = request.transport
        if transport is None or transport.is_closing():
            await stream.close()
            with contextlib.suppress(asyncio.QueueFull):
                stream.inbox.put_nowait({"op": "end", "stream": stream.id})
            return


async def pod_log(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    if target.verb != "get":
        raise status.method_not_allowed(request.method, request.path)
    pod, container, node_tunnel = await _pod_and_tunnel(request, target)
    params = {
        **_pod_params(pod, container),
        "follow": _flag(request, "follow"),
        "previous": _flag(request, "previous"),
        "timestamps": _flag(request, "timestamps"),
        "tailLines": _int(request, "tailLines"),
        "sinceSeconds": _int(request, "sinceSeconds"),
        "sinceTime": request.query.get("sinceTime") or None,
        "limitBytes": _int(request, "limitBytes"),
    }
    stream = await node_tunnel.open("logs", params)
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    watchdog = asyncio.create_task(_watch_disconnect(request, stream))
    try:
        await response.prepare(request)
        async for chunk in stream.output():
            await response.write(chunk.payload)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        watchdog.cancel()
        await stream.close()
    return response


def _exit_status(stream: NodeStream, command: list[str]) -> dict[str, Any]:
    if stream.error:
        return {
            "metadata": {},
            "status": "Failure",
            "message": str(stream.error.get("message", "exec failed")),
            "reason": str(stream.error.get("reason", "InternalError")),
            "code": stream.error["code"],
        }
    code = stream.exit_code if stream.exit_code is not None else 0
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command {command},"
            f" exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


async def _pump_input(ws: web.WebSocketResponse, stream: NodeStream) -> None:
    async for message in ws:
        if not message.data:
            continue
        if message.type == WSMsgType.BINARY:
            channel, payload = message.data[0], message.data[1:]
        elif message.type == WSMsgType.TEXT:
            # The Python client's write_stdin(str) sends text frames: chr(channel) + text.
            channel, payload = ord(message.data[0]), message.data[1:].encode()
        else:
            continue
        if channel == 0:
            await stream.stdin(payload)
        elif channel == _RESIZE_CHANNEL:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                size = json.loads(payload)
                await stream.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
        elif channel == _CLOSE_CHANNEL and payload[:1] == b"\x00":
            await stream.close_stdin()


async def pod_exec(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    command = request.query.getall("command", [])
    if not command:
        raise status.bad_request("you must specify at least 1 command")
    return await _session(request, target, "exec", command)


async def pod_attach(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    """``kubectl attach``: the container's own process, on the same channel protocol."""
    return await _session(request, target, "attach", [])


async def _session(
    request: web.Request, target: RequestTarget, kind: str, command: list[str]
) -> web.StreamResponse:
    pod, container, node_tunnel = await _pod_and_tunnel(request, target)
    params = {
        **_pod_params(pod, container),
        "command": command,
        "stdin": _flag(request, "stdin"),
        "stdout": _flag(request, "stdout") or "stdout" not in request.query,
        "stderr": _flag(request, "stderr") or "stderr" not in request.query,
        "tty": _flag(request, "tty"),
    }
    if spdyexec.wants_spdy(request):
        return await spdyexec.serve(
            request, node_tunnel, kind, params, lambda done: _exit_status(done, command)
        )
    ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=16 * 1024 * 1024)
    if not ws.can_prepare(request).ok:
        raise status.bad_request(
            f"Upgrade request required: {kind} speaks the websocket channel protocol"
            " (v5.channel.k8s.io or v4.channel.k8s.io) or SPDY/3.1"
        )
    stream = await node_tunnel.open(kind, params)
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(_pump_input(ws, stream))
        try:
            async for chunk in stream.output():
                await ws.send_bytes(bytes([chunk.channel]) + chunk.payload)
            result = json.dumps(_exit_status(stream, command)).encode()
            await ws.send_bytes(bytes([_ERROR_CHANNEL]) + result)
        finally:
            await cancel_and_wait(reader, log=logger)
        await ws.close()
    except (ConnectionError, RuntimeError):
        pass
    finally:
        await stream.close()
    return ws
