"""The agent tunnel's wire format, shared by the server (``/v1-k3py/connect``) and the agent.

An agent keeps one websocket open to the server; the server multiplexes its requests to the
node over it (``kubectl logs``, ``kubectl exec``), so a node behind NAT needs no inbound port.
Control messages are JSON text frames ``{"op": …, "stream": <id>, …}``; data travels in binary
frames ``[stream id: 4 bytes, big-endian][channel: 1 byte][payload]`` whose channels follow
Kubernetes' remote command protocol (0 stdin, 1 stdout, 2 stderr).

Server → agent: ``open`` (``kind`` "logs" or "exec", ``params``), ``resize`` (``width``,
``height``), ``stdin-close``, ``close``, and stdin data. Agent → server: ``opened``, ``error``
(``status``: a Kubernetes Status), ``exit`` (``code``), ``end`` (the stream is over), and
output data. The stream ids are chosen by the server. No frame carries more than
:data:`MAX_PAYLOAD` bytes: larger output is split, and each end refuses bigger frames, so a
peer cannot make the other buffer an unbounded message.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

CONNECT_PATH = "/v1-k3py/connect"
PROTOCOL = "k3py-tunnel.v1"

STDIN = 0
STDOUT = 1
STDERR = 2

_HEADER = struct.Struct(">IB")
# Data payloads are split at 256 KiB; a frame (payload, header, or a control message) may be
# at most 1 MiB.
MAX_PAYLOAD = 256 * 1024
MAX_FRAME = 1024 * 1024


class TunnelProtocolError(ValueError):
    """A frame that does not follow the tunnel's format."""


@dataclass(frozen=True)
class Data:
    stream: int
    channel: int
    payload: bytes


def encode_data(stream: int, channel: int, payload: bytes) -> bytes:
    return _HEADER.pack(stream, channel) + payload


def decode_data(frame: bytes) -> Data:
    if len(frame) < _HEADER.size:
        raise TunnelProtocolError("a data frame needs a 5-byte header")
    stream, channel = _HEADER.unpack_from(frame)
    return Data(stream, channel, frame[_HEADER.size :])


def encode_control(op: str, stream: int, **fields: Any) -> str:
    return json.dumps({"op": op, "stream": stream, **fields}, separators=(",", ":"))


def decode_control(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise TunnelProtocolError("a control frame must be JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise TunnelProtocolError("a control frame needs an op")
    if not isinstance(message.get("stream"), int):
        raise TunnelProtocolError("a control frame needs a stream id")
    return message
