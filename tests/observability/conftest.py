"""Fixtures: the real API server application in process, with users of every kind (admin,
node1, an unprivileged jane): the server tests' own fixtures."""

from tests.server.conftest import api, datastore, settings

__all__ = ["api", "datastore", "settings"]
