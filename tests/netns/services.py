"""Helpers for the service tests in namespaces: small HTTP backends and clients, a DNS resolver.

Backends are busybox ``httpd`` serving a page that names them and a CGI script that prints the
client's address (``/cgi-bin/ip``), so a test sees which endpoint answered and with which source
address. Clients run the test's Python inside a namespace (no curl needed) and make several
requests in one process. :func:`start_resolver` runs a tiny dnslib resolver (the "outside" DNS of
forwarding tests) that answers A questions under ``example.org`` with one address and
NXDOMAIN for any other name, as a real resolver does for names such as ``web.default``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.netns.topology import Host

BUSYBOX = "/bin/busybox"

_CLIENT = r"""
import json, socket, sys, urllib.request
url, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out = []
for _ in range(count):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            out.append(reply.read().decode().strip())
    except Exception as err:
        out.append("error: " + str(getattr(err, "reason", err)))
print(json.dumps(out))
"""

_RESOLVER = r"""
import socket, sys
from dnslib import A, QTYPE, RCODE, RR, DNSRecord
address, port, answer = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((address, port))
while True:
    data, peer = sock.recvfrom(4096)
    request = DNSRecord.parse(data)
    reply = request.reply()
    if not str(request.q.qname).rstrip(".").endswith("example.org"):
        reply.header.rcode = RCODE.NXDOMAIN
    elif request.q.qtype == QTYPE.A:
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=30, rdata=A(answer)))
    sock.sendto(reply.pack(), peer)
"""

_QUERY = r"""
import sys
from dnslib import DNSRecord
server, name, qtype = sys.argv[1], sys.argv[2], sys.argv[3]
tcp = len(sys.argv) > 4
reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, tcp=tcp, timeout=3))
from dnslib import RCODE
print(RCODE.get(reply.header.rcode))
for rr in reply.rr:
    print(rr.rdata)
"""


def start_backend(host: Host, address: str, port: int, name: str, root: Path) -> None:
    """busybox httpd on ``address:port`` in ``host``: ``/`` names it, ``/cgi-bin/ip`` echoes
    the client's address."""
    www = root / f"www-{name}"
    (www / "cgi-bin").mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text(f"{name}\n")
    script = www / "cgi-bin" / "ip"
    script.write_text('#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REMOTE_ADDR"\n')
    script.chmod(0o755)
    host.popen(
        [BUSYBOX, "httpd", "-f", "-p", f"{address}:{port}", "-h", str(www)],
        root / f"httpd-{name}.log",
    )
    wait_listening(host, address, port)


def wait_listening(host: Host, address: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ss = host.run("ss", "-Hltn", f"src {address}:{port}", check=False).stdout
        if ss.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {address}:{port} in {host.name}")


def fetch(host: Host, url: str, count: int = 1, timeout: float = 3) -> list[str]:
    """``count`` HTTP GETs of ``url`` from inside ``host``: bodies, or ``error: …``."""
    result = host.run(
        sys.executable, "-c", _CLIENT, url, str(count), str(timeout), timeout=count * timeout + 30
    )
    answers: list[str] = json.loads(result.stdout)
    return answers


def start_resolver(host: Host, address: str, answer: str, log: Path) -> None:
    host.popen([sys.executable, "-c", _RESOLVER, address, "53", answer], log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if host.run("ss", "-Hlun", f"src {address}:53", check=False).stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"the test resolver did not start in {host.name}")


def query(host: Host, server: str, name: str, qtype: str = "A", *, tcp: bool = False) -> list[str]:
    """A DNS query from ``host``: the rcode name, then each answer's data."""
    argv = [sys.executable, "-c", _QUERY, server, name, qtype, *(["tcp"] if tcp else [])]
    return host.run(*argv, timeout=20).stdout.split("\n")[:-1]
