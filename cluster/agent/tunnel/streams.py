"""What the node does for a tunnel stream: a container's logs, or a process in a container.

The server names the pod (namespace, name, uid) and container; the container is found by the
labels the agent put on it, its latest instance or, for ``--previous``, the one before. Logs
honour ``follow``, ``tailLines``, ``sinceSeconds``/``sinceTime``, ``timestamps`` and
``limitBytes``. An exec copies stdin, resize and close from the server to the process and its
output back, then reports the exit code. Refusals travel as Kubernetes Statuses, worded as the
kubelet words them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from k3py.cluster.agent.podsync.status import timestamp
from k3py.cluster.agent.runtime import (
    LABEL_CONTAINER_NAME,
    LABEL_NODE,
    LABEL_POD_UID,
    ContainerInfo,
    ContainerRuntime,
    ExecSession,
    LogOptions,
)
from k3py.cluster.agent.tunnel.client import StreamChannel
from k3py.cluster.agent.tunnel.portforward import port_forward
from k3py.cluster.client.clock import Clock
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.tunnel")

ExtraStream = Callable[[dict[str, Any], StreamChannel], Awaitable[None]]


class StreamRefused(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = {"code": code, "reason": reason, "message": message}


def _since(params: dict[str, Any], clock: Clock) -> datetime.datetime | None:
    if params.get("sinceSeconds") is not None:
        return clock.now() - datetime.timedelta(seconds=int(params["sinceSeconds"]))
    text = params.get("sinceTime")
    if text:
        try:
            return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            raise StreamRefused(400, "BadRequest", f"sinceTime {text!r} is not RFC 3339") from None
    return None


class NodeStreams:
    """The tunnel's stream handler for this node."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        node_name: str,
        clock: Clock,
        extra: Mapping[str, ExtraStream] | None = None,
    ) -> None:
        self._runtime = runtime
        self._node = node_name
        self._clock = clock
        # Other kinds the agent serves (the observability streams: usage, metrics).
        self._extra = dict(extra or {})

    async def __call__(self, kind: str, params: dict[str, Any], channel: StreamChannel) -> None:
        try:
            if kind == "logs":
                await self._logs(params, channel)
            elif kind == "exec":
                await self._exec(params, channel)
            elif kind == "portforward":
                await port_forward(params, channel)
            elif kind == "attach":
                await self._attach(params, channel)
            elif kind in self._extra:
                await self._extra[kind](params, channel)
            else:
                raise StreamRefused(400, "BadRequest", f"unknown stream kind {kind!r}")
        except StreamRefused as refused:
            await channel.control("error", status=refused.status)

    async def _container(self, params: dict[str, Any], *, previous: bool) -> ContainerInfo:
        name = str(params.get("container", ""))
        labels = {
            LABEL_NODE: self._node,
            LABEL_POD_UID: str(params.get("uid", "")),
            LABEL_CONTAINER_NAME: name,
        }
        instances = sorted(
            await self._runtime.list_containers(labels),
            key=lambda c: (c.attempt, c.created_at or 0),
        )
        if previous:
            if len(instances) < 2:
                raise StreamRefused(
                    400,
                    "BadRequest",
                    f'previous terminated container "{name}" in pod "{params.get("pod")}"'
                    " not found",
                )
            return instances[-2]
        if not instances:
            raise StreamRefused(
                400,
                "BadRequest",
                f'container "{name}" in pod "{params.get("pod")}" is waiting to start: '
                "ContainerCreating",
            )
        return instances[-1]

    async def _logs(self, params: dict[str, Any], channel: StreamChannel) -> None:
        container = await self._container(params, previous=bool(params.get("previous")))
        tail = params.get("tailLines")
        options = LogOptions(
            follow=bool(params.get("follow")) and container.status == "running",
            tail=int(tail) if tail is not None and int(tail) >= 0 else None,
            since=_since(params, self._clock),
            timestamps=bool(params.get("timestamps")),
        )
        limit = params.get("limitBytes")
        remaining = int(limit) if limit is not None else None
        await channel.control("opened")
        async for data in self._runtime.logs(container.id, options):
            chunk = data if remaining is None else data[:remaining]
            if remaining is not None:
                remaining -= len(chunk)
            if chunk:
                await channel.output(1, chunk)
            if remaining is not None and remaining <= 0:
                break

    async def _exec(self, params: dict[str, Any], channel: StreamChannel) -> None:
        container = await self._container(params, previous=False)
        if container.status != "running":
            raise StreamRefused(
                400,
                "BadRequest",
                "cannot exec in a container that is not running: container"
                f' "{params.get("container")}" exited at {timestamp(container.finished_at)}',
            )
        command = [str(c) for c in params.get("command") or []]
        stdin = bool(params.get("stdin"))
        session = await self._runtime.exec_session(
            container.id, command, tty=bool(params.get("tty")), stdin=stdin
        )
        await self._relay(channel, session)

    async def _attach(self, params: dict[str, Any], channel: StreamChannel) -> None:
        container = await self._container(params, previous=False)
        if container.status != "running":
            raise StreamRefused(
                400,
                "BadRequest",
                "cannot attach to a container that is not running: container"
                f' "{params.get("container")}" exited at {timestamp(container.finished_at)}',
            )
        stdin = bool(params.get("stdin"))
        await self._relay(channel, await self._runtime.attach_session(container.id, stdin=stdin))

    async def _relay(self, channel: StreamChannel, session: ExecSession) -> None:
        """Copy a process's output out and the server's stdin and resizes in, then its exit."""
        await channel.control("opened")
        pump = asyncio.create_task(self._input(channel, session))
        try:
            while (chunk := await session.read()) is not None:
                await channel.output(chunk[0], chunk[1])
            await channel.control("exit", code=await session.exit_code())
        finally:
            await cancel_and_wait(pump, log=logger)
            await session.close()

    @staticmethod
    async def _input(channel: StreamChannel, session: ExecSession) -> None:
        while True:
            item = await channel.inbox.get()
            if isinstance(item, bytes):
                await session.write(item)
            elif item.get("op") == "resize":
                with contextlib.suppress(ValueError, TypeError, json.JSONDecodeError):
                    await session.resize(int(item.get("width", 0)), int(item.get("height", 0)))
            elif item.get("op") == "stdin-close":
                await session.close_stdin()
