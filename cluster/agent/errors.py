"""The agent's errors: one class per concern, all :class:`k3py.errors.K3pyError`.

Only the CLI catches them and prints their one-line message, so each says what is wrong and
what to do about it.
"""

from __future__ import annotations

from k3py.errors import K3pyError


class AgentError(K3pyError):
    """The agent cannot start or keep running (settings, data directory)."""


class JoinError(AgentError):
    """Joining the cluster failed: wrong token, CA mismatch, server refused the node."""


class RuntimeUnavailable(AgentError):
    """The container runtime does not answer or refused an operation."""


class ImageError(AgentError):
    """An image could not be pulled, found or loaded."""
