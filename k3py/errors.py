"""The root of k3py's error hierarchy.

Each area (check-config, image, flash, server, agent) derives its own error type from
:class:`K3pyError`. Only the CLI catches them: it prints ``str(error)`` as one line and exits
with ``error.exit_code``; ``--debug`` shows the traceback.
"""


class K3pyError(Exception):
    """A failure a user can act on; the message says what is wrong and what to do."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(K3pyError):
    """Bad flags, environment or config file (sysexits' EX_USAGE)."""

    exit_code = 64


class MissingExtra(K3pyError):
    """A command needs an optional extra of the k3py distribution that is not installed."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(
            f"{what} needs k3py's [{extra}] extra (no module {module!r}): "
            f"pip install 'k3py[{extra}]'"
        )
