"""JSON bytes as kube-apiserver writes them.

kube-apiserver encodes with Go's ``encoding/json`` ``Encoder``: compact, UTF-8 kept as is,
``<``, ``>``, ``&``, U+2028 and U+2029 escaped as ``\\u003c``… (HTML-safe escaping is the
encoder's default), and a newline after every document. Clients and tests that compare bodies
(error ``Status`` objects above all) see the same bytes from k3py.
"""

from __future__ import annotations

import json
from typing import Any

_GO_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def encode(value: Any) -> bytes:
    """``value`` as Go's ``json.NewEncoder(w).Encode`` writes it (trailing newline included)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # The escaped characters can only occur inside strings, so translating the whole text
    # is the same as escaping each string.
    if any(c in text for c in "<>&\u2028\u2029"):
        text = text.translate(_GO_ESCAPES)
    return text.encode() + b"\n"
