"""Netlink through pyroute2, loaded lean, and the namespace switch that reaches a sandbox.

pyroute2's package ``__init__`` imports every protocol it has (NDB, IPDB, the CLI, wireless,
conntrack…): about 14 MB of RSS on x86-64, a third of the agent's budget. The agent needs only
the rtnetlink API, :class:`pyroute2.iproute.linux.IPRoute` (about 5 MB), so :func:`iproute`
registers the ``pyroute2`` package without running its ``__init__`` and imports that one
module. Whoever asks the package for anything else later (``from pyroute2 import NDB``) gets
the full ``__init__`` run at that moment, through a module ``__getattr__``, so nothing breaks.
``IPRoute`` also inherits from ``pyroute2.lab.LAB_API``, a hook for pyroute2's documentation
lab that wraps every method in ``unittest.mock`` when its ``use_mock`` flag is set; importing it
loads ``unittest`` and ``argparse`` (1.6 MB) for a flag the agent never sets, so the same
registration puts a pass-through ``LAB_API`` there (the real module still loads for anyone
else who imports ``pyroute2.lab`` before the agent does).

A pod sandbox's network namespace is reached through its PID (``/proc/<pid>/ns/net``): the
calling thread enters it with ``setns(2)``, opens a netlink socket there (a socket stays bound
to the namespace it was created in), and returns to its own namespace at once. Python 3.11 has
no ``os.setns``, so it goes through libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

CLONE_NEWNET = 0x40000000


def _register_package() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        raise ImportError("pyroute2 is not installed (Debian: python3-pyroute2)")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def full_package(name: str) -> Any:
        if name.startswith("__") or importlib.util.find_spec(f"pyroute2.{name}") is not None:
            # A submodule: ``from pyroute2 import config`` imports it after this refusal.
            raise AttributeError(name)
        # Someone wants more than rtnetlink: run the real __init__ now, once.
        module.__dict__.pop("__getattr__", None)
        loader.exec_module(module)
        return getattr(module, name)

    module.__getattr__ = full_package  # type: ignore[method-assign]
    sys.modules["pyroute2"] = module
    if "pyroute2.lab" not in sys.modules:
        sys.modules["pyroute2.lab"] = _lean_lab()


class _PassThrough:
    """``pyroute2.lab.LAB_API`` with ``use_mock`` off: it only passes construction on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def _lean_lab() -> types.ModuleType:
    lab = types.ModuleType("pyroute2.lab", "pyroute2's lab hook without unittest.mock")
    lab.LAB_API = _PassThrough  # type: ignore[attr-defined]
    lab.use_mock = False  # type: ignore[attr-defined]
    lab.registry = []  # type: ignore[attr-defined]
    return lab


def iproute_class() -> Any:
    """pyroute2's ``IPRoute`` class, imported without the rest of the package."""
    _register_package()
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def netlink_error() -> type[Exception]:
    _register_package()
    from pyroute2.netlink.exceptions import NetlinkError

    return NetlinkError  # type: ignore[no-any-return]


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextlib.contextmanager
def iproute_in(pid: int | None = None) -> Iterator[Any]:
    """An ``IPRoute`` in this process's namespace, or in the one of process ``pid``."""
    cls = iproute_class()
    if pid is None:
        ipr = cls()
    else:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                _setns(target)
                try:
                    ipr = cls()
                finally:
                    _setns(home)
            finally:
                os.close(target)
        finally:
            os.close(home)
    try:
        yield ipr
    finally:
        ipr.close()
