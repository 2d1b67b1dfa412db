"""Reading a kubeconfig into what the client needs: the server URL, a TLS context and a token.

K3s-style kubeconfigs embed everything (``certificate-authority-data``,
``client-certificate-data``, ``client-key-data``); files named by path and bearer tokens
(``token``, ``tokenFile``) work too. Python's ``ssl`` loads certificate chains only from files,
so embedded client credentials pass through a private temporary file that is removed at once.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k3py.errors import K3pyError


class KubeconfigError(K3pyError):
    """The kubeconfig is missing, malformed or names a context that is not in it."""


@dataclass(frozen=True)
class Credentials:
    server_url: str
    ssl_context: ssl.SSLContext | None
    token: str | None


def _named(entries: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            return body if isinstance(body, dict) else {}
    raise KubeconfigError(f"kubeconfig {path}: no {what} named {name!r}; check current-context")


def _data(section: dict[str, Any], key: str, base: Path, path: Path) -> bytes | None:
    embedded = section.get(f"{key}-data")
    if embedded:
        try:
            return base64.b64decode(str(embedded), validate=True)
        except (binascii.Error, ValueError):
            raise KubeconfigError(f"kubeconfig {path}: {key}-data is not valid base64") from None
    named = section.get(key)
    if named:
        file = Path(str(named))
        if not file.is_absolute():
            file = base / file
        try:
            return file.read_bytes()
        except OSError as err:
            raise KubeconfigError(f"kubeconfig {path}: cannot read {key} {file}: {err}") from None
    return None


def load_client_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a PEM certificate and key held in memory into ``context``."""
    fd, name = tempfile.mkstemp(prefix="k3py-client-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)


def read_kubeconfig(path: Path, context_name: str | None = None) -> Credentials:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a kubeconfig mapping")
    name = context_name or doc.get("current-context")
    if not name:
        raise KubeconfigError(f"kubeconfig {path} has no current-context")
    ctx = _named(doc.get("contexts"), str(name), "context", path)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster", "")), "cluster", path)
    user = _named(doc.get("users"), str(ctx.get("user", "")), "user", path)
    server = str(cluster.get("server") or "")
    if not server:
        raise KubeconfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    base = path.parent
    ssl_context: ssl.SSLContext | None = None
    if server.startswith("https://"):
        ssl_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if cluster.get("insecure-skip-tls-verify"):
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        else:
            ca = _data(cluster, "certificate-authority", base, path)
            if ca is not None:
                ssl_context = ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
        cert = _data(user, "client-certificate", base, path)
        key = _data(user, "client-key", base, path)
        if cert is not None and key is not None:
            try:
                load_client_chain(ssl_context, cert, key)
            except ssl.SSLError as err:
                raise KubeconfigError(
                    f"kubeconfig {path}: the client certificate or key is unusable: {err}"
                ) from None
    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            token = Path(str(user["tokenFile"])).read_text().strip()
        except OSError as err:
            raise KubeconfigError(f"kubeconfig {path}: cannot read tokenFile: {err}") from None
    return Credentials(server, ssl_context, str(token) if token else None)
