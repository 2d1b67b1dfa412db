"""The admin kubeconfig the server writes at every start (``/etc/k3py/k3py.yaml`` by default).

Its shape is K3s's ``k3s.yaml``: a cluster, a user and a context all named ``default``, with the
CA and the admin client certificate and key embedded, so the file alone is a working credential.
It is written atomically with the requested mode (0600 unless ``--write-kubeconfig-mode`` says
otherwise), because it is as powerful as root on the cluster.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k3py.cluster.server.pki import write_private
from k3py.errors import K3pyError

if TYPE_CHECKING:
    from k3py.cluster.server.pki import ClusterPKI

logger = logging.getLogger("k3py.server.kubeconfig")

DEFAULT_MODE = 0o600
NAME = "default"


class KubeconfigError(K3pyError):
    """The kubeconfig cannot be written, or its mode is malformed."""


def parse_mode(text: str | int | None) -> int:
    """``--write-kubeconfig-mode`` as K3s reads it: octal digits such as ``644`` or ``0600``."""
    if text is None or text == "":
        return DEFAULT_MODE
    raw = str(text).strip()
    try:
        mode = int(raw, 8)
    except ValueError:
        raise KubeconfigError(
            f"--write-kubeconfig-mode {raw!r} is not an octal file mode such as 600 or 644"
        ) from None
    if not 0 <= mode <= 0o777:
        raise KubeconfigError(f"--write-kubeconfig-mode {raw!r} is outside 000..777")
    return mode


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kubeconfig(server_url: str, pki: ClusterPKI) -> dict[str, Any]:
    """The kubeconfig document, with keys in k3s.yaml's order."""
    return {
        "apiVersion": "v1",
        "clusters": [
            {
                "cluster": {
                    "certificate-authority-data": _b64(pki.ca_bundle()),
                    "server": server_url,
                },
                "name": NAME,
            }
        ],
        "contexts": [{"context": {"cluster": NAME, "user": NAME}, "name": NAME}],
        "current-context": NAME,
        "kind": "Config",
        "preferences": {},
        "users": [
            {
                "name": NAME,
                "user": {
                    "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
                    "client-key-data": _b64(pki.admin_key.read_bytes()),
                },
            }
        ],
    }


def write_kubeconfig(path: Path, mode: int, server_url: str, pki: ClusterPKI) -> None:
    """Write the admin kubeconfig for ``server_url`` to ``path`` atomically with ``mode``."""
    import yaml

    text = yaml.safe_dump(kubeconfig(server_url, pki), sort_keys=False, default_flow_style=False)
    try:
        write_private(path, text.encode(), mode)
    except PermissionError as err:
        raise KubeconfigError(
            f"cannot write the kubeconfig {path}: {err.strerror} "
            "(run as root or pass --write-kubeconfig with a writable path)"
        ) from None
    except OSError as err:
        raise KubeconfigError(f"cannot write the kubeconfig {path}: {err}") from None
    logger.info("wrote kubeconfig", extra={"fields": {"path": str(path), "mode": f"{mode:o}"}})
