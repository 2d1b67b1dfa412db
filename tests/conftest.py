"""Fixtures shared by every test tier."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

# Any agent a test starts in the machine's own namespace leaves its network alone (no cni0,
# routes or nftables rules there); netns tests give their agents a backend explicitly.
os.environ.setdefault("K3PY_FLANNEL_BACKEND", "none")


@pytest.fixture(autouse=True)
def _k3py_logging_restored() -> Iterator[None]:
    """Undo what an in-process ``k3py`` command did to the ``k3py`` logger.

    ``k3py.log.setup`` gives the logger its own stderr handler and stops propagation, as a
    command should; left in place, later tests' ``caplog`` would see nothing and the handler
    would write to a stream pytest has closed.
    """
    yield
    logger = logging.getLogger("k3py")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
