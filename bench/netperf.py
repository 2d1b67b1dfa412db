"""A tiny TCP throughput and round-trip meter, run inside network namespaces by the benchmarks.

``python -m bench.netperf server --port P`` accepts connections: a ``stream`` client's bytes
are counted and the count sent back when it stops; a ``pingpong`` client's one-byte messages
are echoed. ``python -m bench.netperf client HOST --port P --mode stream --seconds S`` prints
``{"bits_per_second": …}``; ``--mode pingpong --rounds N`` prints round-trip percentiles in
microseconds; ``routewait CIDR --seconds S`` prints when a route to ``CIDR`` appeared. The
benchmarks start it with ``ip netns exec`` (a host) or ``nsenter -t PID -n``
(a pod's sandbox), so both ends run the same code whatever the path between them. iperf3 and
netperf are not in the test machine's packages; this measures the same thing well enough for a
ratio taken against the plain link in the same run.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time

CHUNK = 256 * 1024


def _serve_one(conn: socket.socket) -> None:
    with conn:
        mode = conn.recv(1)
        if mode == b"s":
            total = 0
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    break
                total += len(data)
            conn.sendall(struct.pack("!Q", total))
        elif mode == b"p":
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(1)
                if not data:
                    break
                conn.sendall(data)


def server(port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(8)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _connect(host: str, port: int) -> socket.socket:
    deadline = time.monotonic() + 20
    while True:
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stream(host: str, port: int, seconds: float) -> dict[str, float]:
    payload = b"\0" * CHUNK
    with _connect(host, port) as sock:
        sock.sendall(b"s")
        sent = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            sock.sendall(payload)
            sent += len(payload)
        sock.shutdown(socket.SHUT_WR)
        received = struct.unpack("!Q", sock.recv(8))[0]
        elapsed = time.monotonic() - started
    return {"bits_per_second": received * 8 / elapsed, "bytes": float(received)}


def pingpong(host: str, port: int, rounds: int) -> dict[str, float]:
    with _connect(host, port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"p")
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            sock.sendall(b"x")
            sock.recv(1)
            samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return {
        "rtt_p50_us": samples[len(samples) // 2],
        "rtt_p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def route_wait(cidr: str, timeout: float) -> dict[str, float]:
    """Poll this namespace's routes (1 ms) until one to ``cidr`` appears; when, in epoch time."""
    from k3py.cluster.agent.network.netlink import iproute_in

    network, _, length = cidr.partition("/")
    deadline = time.monotonic() + timeout
    with iproute_in() as ipr:
        while time.monotonic() < deadline:
            for route in ipr.get_routes(family=socket.AF_INET):
                if route.get_attr("RTA_DST") == network and route["dst_len"] == int(length):
                    return {"seen": time.time()}
            time.sleep(0.001)
    return {"seen": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("server", "client", "routewait"))
    parser.add_argument("host", nargs="?", default="")
    parser.add_argument("--port", type=int, default=5201)
    parser.add_argument("--mode", choices=("stream", "pingpong"), default="stream")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    if args.role == "server":
        server(args.port)
    elif args.role == "routewait":
        print(json.dumps(route_wait(args.host, args.seconds)), flush=True)
    elif args.mode == "stream":
        print(json.dumps(stream(args.host, args.port, args.seconds)))
    else:
        print(json.dumps(pingpong(args.host, args.port, args.rounds)))


if __name__ == "__main__":
    main()
