"""SPDY/3.1 framing, the server's side: what kubectl's port-forward speaks.

kubectl (1.30+) tunnels SPDY through a websocket (subprotocol
``SPDY/3.1+portforward.k8s.io``): the websocket's binary messages carry the SPDY byte
stream, and each forwarded connection is a pair of SPDY streams (``streamType`` data and
error). This module turns bytes into frames (:meth:`SpdyReader.feed`) and frames into bytes
(:class:`SpdyWriter`), with the name/value header blocks compressed by one zlib context per
direction primed with SPDY/3's dictionary. Hand-written because no maintained Python SPDY
library exists; Go's ``moby/spdystream`` (kubectl's side) neither sends nor expects flow
control frames, so none are sent here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9
FLAG_FIN = 0x01
RST_CANCEL = 5
MAX_FRAME = 16 * 1024 * 1024

# SPDY/3's header dictionary (draft 3, section 2.6.10.1): these words, each with a 4-byte
# big-endian length, then a run of common values.
_WORD_TEXT = (
    "options head post put delete trace accept accept-charset accept-encoding"
    " accept-language accept-ranges age allow authorization cache-control connection"
    " content-base content-encoding content-language content-length content-location"
    " content-md5 content-range content-type date etag expect expires from host if-match"
    " if-modified-since if-none-match if-range if-unmodified-since last-modified location"
    " max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after"
    " server te trailer transfer-encoding upgrade user-agent vary via warning"
    " www-authenticate method get status"
)
_WORDS = (
    *_WORD_TEXT.split(),
    *("200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"),
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504"
    "505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, "
    "Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class SpdyError(Exception):
    """The peer sent bytes that are not SPDY/3."""


@dataclass
class Frame:
    kind: str  # "data", "syn_stream", "syn_reply", "rst_stream", "ping", "goaway", ...
    stream_id: int = 0
    flags: int = 0
    payload: bytes = b""
    headers: dict[str, list[str]] = field(default_factory=dict)
    value: int = 0  # a PING's id, a RST_STREAM's or GOAWAY's status

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


_CONTROL_KINDS = {
    SYN_STREAM: "syn_stream",
    SYN_REPLY: "syn_reply",
    RST_STREAM: "rst_stream",
    SETTINGS: "settings",
    PING: "ping",
    GOAWAY: "goaway",
    HEADERS: "headers",
    WINDOW_UPDATE: "window_update",
}


class SpdyReader:
    """Incoming bytes in, complete frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if length > MAX_FRAME:
                raise SpdyError(f"a {length}-byte frame is too large")
            if len(self._buffer) < 8 + length:
                break
            head = bytes(self._buffer[:8])
            body = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            frames.append(self._frame(head, body))
        return frames

    def _frame(self, head: bytes, body: bytes) -> Frame:
        flags = head[4]
        if not head[0] & 0x80:
            stream_id = int.from_bytes(head[:4], "big") & 0x7FFFFFFF
            return Frame("data", stream_id, flags, body)
        version = int.from_bytes(head[:2], "big") & 0x7FFF
        if version != VERSION:
            raise SpdyError(f"SPDY version {version} is not spoken here")
        kind = _CONTROL_KINDS.get(int.from_bytes(head[2:4], "big"), "unknown")
        if kind in ("syn_stream", "syn_reply", "headers", "rst_stream", "window_update"):
            if len(body) < 4:
                raise SpdyError(f"a short {kind} frame")
            stream_id = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            frame = Frame(kind, stream_id, flags)
            if kind == "syn_stream":
                frame.headers = self._headers(body[10:])
            elif kind in ("syn_reply", "headers"):
                frame.headers = self._headers(body[4:])
            elif kind == "rst_stream" and len(body) >= 8:
                frame.value = int.from_bytes(body[4:8], "big")
            return frame
        if kind == "ping" and len(body) >= 4:
            return Frame(kind, flags=flags, value=int.from_bytes(body[:4], "big"))
        return Frame(kind, flags=flags, payload=body)

    def _headers(self, block: bytes) -> dict[str, list[str]]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as err:
            raise SpdyError(f"a header block does not inflate: {err}") from None
        headers: dict[str, list[str]] = {}
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            offset = 4
            for _ in range(count):
                (size,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                (size,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                headers.setdefault(name.lower(), []).extend(value.split("\x00"))
        except (struct.error, UnicodeDecodeError) as err:
            raise SpdyError(f"a malformed header block: {err}") from None
        return headers


class SpdyWriter:
    """Frames to bytes (one compression context for every header block this side sends)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=DICTIONARY)

    @staticmethod
    def _control(kind: int, flags: int, body: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(body)) + body

    def _block(self, headers: dict[str, str]) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, value in headers.items():
            for text in (name.lower(), value):
                encoded = text.encode()
                raw += struct.pack(">I", len(encoded)) + encoded
        return self._deflate.compress(bytes(raw)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None) -> bytes:
        body = struct.pack(">I", stream_id) + self._block(headers or {})
        return self._control(SYN_REPLY, 0, body)

    def syn_stream(self, stream_id: int, headers: dict[str, str], flags: int = 0) -> bytes:
        body = struct.pack(">IIBB", stream_id, 0, 0, 0) + self._block(headers)
        return self._control(SYN_STREAM, flags, body)

    def rst_stream(self, stream_id: int, status: int = RST_CANCEL) -> bytes:
        return self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self._control(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_stream_id: int = 0) -> bytes:
        return self._control(GOAWAY, 0, struct.pack(">II", last_stream_id, 0))

    @staticmethod
    def data(stream_id: int, payload: bytes, *, fin: bool = False) -> bytes:
        flags = FLAG_FIN if fin else 0
        return struct.pack(">II", stream_id & 0x7FFFFFFF, flags << 24 | len(payload)) + payload
