"""Streaming and hijacked Docker engine endpoints over its unix socket, with asyncio.

Seven endpoint shapes: the ping, whose ``Server`` header names the engine's version
(:func:`server_header`), short requests answered with JSON (:func:`request_json`: listings,
inspections, statistics, creating and starting containers and execs, which the agent makes all
the time without loading the ``docker`` package and its HTTP stack), a tar sent to
an endpoint that answers with a stream of JSON messages (:func:`send_archive`: loading and
importing images, which every first boot of a board does), a long GET
whose body is framed output (``/containers/{id}/logs``), a long GET of JSON lines
(``/events``), requests the engine answers only when done (``POST /containers/{id}/stop``,
``DELETE /containers/{id}``), and ``POST /exec/{id}/start`` which upgrades the connection to a
raw bidirectional stream. Requests are sent as HTTP/1.0 so the engine answers without chunked
encoding and closes at the end; the exec start upgrades as the Docker CLI does. Without a TTY
the engine frames output as ``[stream, 0, 0, 0, size(4, BE)]`` followed by ``size`` bytes
(stdcopy); with a TTY the output is raw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from k3py.cluster.agent.errors import RuntimeUnavailable

_HEADER_LIMIT = 64 * 1024
_CHUNK = 256 * 1024  # an archive is sent from disk in pieces of this size


async def _connect(socket: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(socket, limit=1024 * 1024)
    except OSError as err:
        raise RuntimeUnavailable(
            f"cannot connect to the Docker engine at unix://{socket}: {err.strerror or err}"
        ) from None


async def _read_head(reader: asyncio.StreamReader, what: str) -> int:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise RuntimeUnavailable(f"the Docker engine sent no valid answer to {what}") from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        raise RuntimeUnavailable(
            f"the Docker engine answered {what} with {status_line!r}"
        ) from None


async def _error_body(reader: asyncio.StreamReader) -> str:
    with contextlib.suppress(Exception):
        body = await asyncio.wait_for(reader.read(_HEADER_LIMIT), 5)
        return str(json.loads(body).get("message", body.decode(errors="replace")))
    return "no details"


async def _open_get(socket: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _connect(socket)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
    await writer.drain()
    status = await _read_head(reader, path)
    if status != 200:
        message = await _error_body(reader)
        writer.close()
        raise RuntimeUnavailable(f"Docker engine: GET {path.split('?')[0]}: {status} {message}")
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader, multiplexed: bool) -> tuple[int, bytes] | None:
    if not multiplexed:
        data = await reader.read(32 * 1024)
        return (1, data) if data else None
    try:
        header = await reader.readexactly(8)
        payload = await reader.readexactly(int.from_bytes(header[4:8], "big"))
    except asyncio.IncompleteReadError:
        return None
    # Stream 0 is stdin echoed back; treat it as stdout as the Docker CLI does.
    return (header[0] or 1, payload)


async def get_stream(
    socket: str, path: str, *, multiplexed: bool
) -> AsyncIterator[tuple[int, bytes]]:
    """The body of a streaming GET as (stream, data) chunks; closing the iterator disconnects."""
    reader, writer = await _open_get(socket, path)
    try:
        while (frame := await _read_frame(reader, multiplexed)) is not None:
            yield frame
    finally:
        writer.close()


async def get_lines(socket: str, path: str) -> AsyncIterator[bytes]:
    """The body of a streaming GET, line by line."""
    reader, writer = await _open_get(socket, path)
    try:
        while line := await reader.readline():
            if line.strip():
                yield line
    finally:
        writer.close()


async def call(socket: str, method: str, path: str, *, limit: float) -> tuple[int, str]:
    """A bodiless request answered when the engine is done (``POST /containers/ID/stop``
    takes the whole grace period, ``DELETE /containers/ID`` the clean-up): on the event loop,
    so no thread of the runtime's pool waits and any number run at once."""
    reader, writer = await _connect(socket)
    try:
        writer.write(
            f"{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(limit):
            status = await _read_head(reader, path)
            body = await reader.read(_HEADER_LIMIT)
    except TimeoutError:
        raise RuntimeUnavailable(
            f"the Docker engine did not answer {method} {path.split('?')[0]} in {limit:g}s"
        ) from None
    finally:
        writer.close()
    message = body.decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):
        message = str(json.loads(body).get("message", message))
    return status, message


async def server_header(socket: str, *, limit: float = 30.0) -> str:
    """The engine's ``Server`` header from ``GET /_ping`` (``Docker/26.1.5 (linux)``).

    The engine names itself on every answer; ``/version`` would also describe its components,
    for which dockerd runs ``runc --version`` and ``docker-init --version`` on every call: two
    programs started each time a node reports (about 0.1 s of an emulated board's CPU).
    """
    reader, writer = await _connect(socket)
    try:
        writer.write(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(limit):
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        raise RuntimeUnavailable(f"the Docker engine did not answer /_ping in {limit:g}s") from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
        raise RuntimeUnavailable(f"the Docker engine does not answer: {err}") from None
    finally:
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise RuntimeUnavailable(f"the Docker engine answered /_ping with {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "server":
            return value.strip()
    return ""


async def get_json(socket: str, path: str, *, limit: float = 60.0) -> tuple[int, Any]:
    """``GET path``: the status and the decoded JSON body (the error message, unless 2xx)."""
    return await request_json(socket, "GET", path, limit=limit)


async def request_json(
    socket: str, method: str, path: str, body: Any = None, *, limit: float = 60.0
) -> tuple[int, Any]:
    """A request with an optional JSON body, answered at once: the status and the decoded
    JSON answer (the engine's error message, unless 2xx)."""
    payload = b"" if body is None else json.dumps(body).encode()
    reader, writer = await _connect(socket)
    try:
        writer.write(
            (
                f"{method} {path} HTTP/1.0\r\nHost: docker\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            ).encode()
            + payload
        )
        await writer.drain()
        async with asyncio.timeout(limit):
            status = await _read_head(reader, path)
            answer = await reader.read()
    except TimeoutError:
        raise RuntimeUnavailable(
            f"the Docker engine did not answer {method} {path.split('?')[0]} in {limit:g}s"
        ) from None
    except OSError as err:
        raise RuntimeUnavailable(f"the Docker engine does not answer: {err}") from None
    finally:
        writer.close()
    try:
        data = json.loads(answer) if answer else None
    except ValueError:
        data = None
    if 200 <= status < 300:
        return status, data
    message = data.get("message") if isinstance(data, dict) else None
    return status, str(message or answer.decode(errors="replace").strip())


async def send_archive(
    socket: str, path: str, archive: Path | bytes, *, limit: float
) -> tuple[int, list[dict[str, Any]]]:
    """``POST path`` with a tar body (a file, sent from disk piece by piece, or bytes) to an
    endpoint that answers with a stream of JSON messages (``/images/load``, ``/images/create``):
    the status and the messages; an error status comes with the engine's one message."""
    size = len(archive) if isinstance(archive, bytes) else archive.stat().st_size
    what = f"POST {path.split('?')[0]}"
    reader, writer = await _connect(socket)
    try:
        async with asyncio.timeout(limit):
            head = (
                f"POST {path} HTTP/1.0\r\nHost: docker\r\n"
                f"Content-Type: application/x-tar\r\nContent-Length: {size}\r\n\r\n"
            )
            # The engine may refuse before it has read the whole body (and close): its answer
            # is read all the same.
            with contextlib.suppress(ConnectionError):
                writer.write(head.encode())
                if isinstance(archive, bytes):
                    writer.write(archive)
                else:
                    with archive.open("rb") as file:
                        while chunk := file.read(_CHUNK):
                            writer.write(chunk)
                            await writer.drain()
                await writer.drain()
            status = await _read_head(reader, what)
            answer = await reader.read()
    except TimeoutError:
        raise RuntimeUnavailable(f"the Docker engine did not answer {what} in {limit:g}s") from None
    except OSError as err:
        raise RuntimeUnavailable(f"the Docker engine does not answer {what}: {err}") from None
    finally:
        writer.close()
    if not 200 <= status < 300:
        with contextlib.suppress(ValueError, AttributeError):
            return status, [{"error": str(json.loads(answer)["message"])}]
        return status, [{"error": answer.decode(errors="replace").strip() or f"status {status}"}]
    messages: list[dict[str, Any]] = []
    for line in answer.splitlines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            message = {"stream": line.decode(errors="replace")}
        messages.append(message if isinstance(message, dict) else {"stream": str(message)})
    return status, messages


class Hijacked:
    """An exec's upgraded connection: framed (or raw, with a TTY) output, and stdin."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tty: bool):
        self._reader = reader
        self._writer = writer
        self._tty = tty

    async def read(self) -> tuple[int, bytes] | None:
        return await _read_frame(self._reader, not self._tty)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close_write(self) -> None:
        if self._writer.can_write_eof():
            with contextlib.suppress(OSError):
                self._writer.write_eof()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


async def attach(socket: str, container_id: str, *, stdin: bool, tty: bool) -> Hijacked:
    """The running process's own stdio (``kubectl attach``), upgraded as an exec's is."""
    reader, writer = await _connect(socket)
    query = f"stream=1&stdout=1&stderr=1&stdin={1 if stdin else 0}"
    writer.write(
        (
            f"POST /containers/{container_id}/attach?{query} HTTP/1.1\r\nHost: docker\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = await _read_head(reader, "attach")
    if status not in (101, 200):
        message = await _error_body(reader)
        writer.close()
        raise RuntimeUnavailable(f"Docker engine: attach: {status} {message}")
    return Hijacked(reader, writer, tty)


async def exec_start(socket: str, exec_id: str, *, tty: bool) -> Hijacked:
    reader, writer = await _connect(socket)
    body = json.dumps({"Detach": False, "Tty": tty}).encode()
    writer.write(
        (
            f"POST /exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
            "Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    status = await _read_head(reader, "exec start")
    if status not in (101, 200):
        message = await _error_body(reader)
        writer.close()
        raise RuntimeUnavailable(f"Docker engine: exec start: {status} {message}")
    return Hijacked(reader, writer, tty)
