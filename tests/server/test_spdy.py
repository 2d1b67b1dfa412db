"""SPDY/3.1 framing as kubectl's port-forward speaks it: header blocks through both zlib
contexts, data frames, pings, and refusal of what is not SPDY/3."""

from __future__ import annotations

import zlib

import pytest

from k3py.cluster.server import spdy


def test_the_header_dictionary_is_spdy3s() -> None:
    # The dictionary id a SPDY/3 peer's zlib stream names (adler32 of the dictionary).
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_frames_round_trip_through_reader_and_writer() -> None:
    client, server = spdy.SpdyWriter(), spdy.SpdyReader()
    wire = client.syn_stream(1, {"streamType": "error", "port": "8080", "requestID": "0"})
    wire += client.syn_stream(3, {"streamType": "data", "port": "8080", "requestID": "0"})
    wire += client.data(3, b"GET / HTTP/1.0\r\n\r\n") + client.data(1, b"", fin=True)
    wire += client.ping(7) + client.rst_stream(3)
    frames = server.feed(wire[:10]) + server.feed(wire[10:])
    kinds = [f.kind for f in frames]
    assert kinds == ["syn_stream", "syn_stream", "data", "data", "ping", "rst_stream"]
    assert frames[1].headers == {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]}
    assert frames[2].payload == b"GET / HTTP/1.0\r\n\r\n"
    assert frames[3].fin
    assert frames[4].value == 7
    assert frames[5].stream_id == 3


def test_other_versions_are_refused() -> None:
    frame = b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"
    with pytest.raises(spdy.SpdyError):
        spdy.SpdyReader().feed(frame)
