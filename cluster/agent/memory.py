"""Process-wide memory settings of the long-running agent, applied once before it starts.

The agent's budget (45 MB resident, idle) leaves no room for defaults sized for servers:

- asyncio gives every TLS connection a 256 KiB read buffer (``SSLProtocol.max_size``), written
  through at creation, and the agent holds one connection per watch of the API server (seven
  or more): about 1.8 MB for buffers that never hold more than a few TLS records (16 KiB
  each) at a time. 32 KiB keeps two records per read.
- glibc's malloc gives every thread that allocates its own arena (up to eight per core), each
  keeping its freed memory; the Docker runtime's thread pool would add four. Two arenas (the
  main one and one shared by the threads) is what ``MALLOC_ARENA_MAX=2`` would set, applied
  with ``mallopt`` because the variable must be in the environment before the process
  starts.
- aiohttp builds a verifying SSL context at import, loading the system's whole CA store into
  it (about 140 certificates: 1.9 MB resident on x86-64, and 2.2 s of the agent's start under
  an emulated ARMv7 CPU). The agent never uses that context: every TLS connection it makes
  trusts the cluster's CA alone (pinned by the join token's hash) or is a probe that verifies
  nothing, as the kubelet's. :func:`import_aiohttp` imports aiohttp with an empty store in
  view, then restores the environment, so a context made later (by anything else) loads the
  system store as usual.
- The boards' Debian kernels (arm64 and armmp-lpae) back anonymous memory with 2 MiB
  transparent huge pages whenever they can (``CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS``), where most
  hosts say ``madvise``: a heap that touches a few KiB of a 2 MiB-aligned range is charged the
  whole huge page. :func:`no_huge_pages` opts the agent (and the processes it starts) out with
  ``prctl(PR_SET_THP_DISABLE)``, before its heap grows.
"""

from __future__ import annotations

import asyncio.sslproto
import ctypes
import logging
import os

logger = logging.getLogger("k3py.agent")

TLS_READ_BUFFER = 32 * 1024
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h
_PR_SET_THP_DISABLE = 41  # linux/prctl.h


def no_huge_pages() -> None:
    """Keep transparent huge pages out of this process's memory (a no-op where unknown)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
            logger.debug("prctl(PR_SET_THP_DISABLE) refused: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):
        pass


def tune() -> None:
    """Apply the settings above (a no-op for what the platform does not have)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):
        return  # not glibc (musl has one arena anyway)
    if not mallopt(_M_ARENA_MAX, MALLOC_ARENAS):
        logger.debug("mallopt(M_ARENA_MAX) refused")


def import_aiohttp() -> None:
    """Import aiohttp without loading the system CA store into its unused default context."""
    names = ("SSL_CERT_FILE", "SSL_CERT_DIR")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(SSL_CERT_FILE=os.devnull, SSL_CERT_DIR=os.devnull)
    try:
        import aiohttp  # noqa: F401
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
