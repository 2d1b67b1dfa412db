"""ServiceAccount tokens: the cluster's signing key, issuing bound tokens, verifying them.

Tokens are JSON Web Tokens in the form kube-apiserver issues for the TokenRequest API: ES256
(ECDSA P-256, SHA-256) signatures over ``header.payload``, with the claims ``iss``, ``sub``
(``system:serviceaccount:<namespace>:<name>``), ``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and
``kubernetes.io`` (namespace, serviceaccount name and uid, and the pod name and uid when the
token is bound to a pod). The key is ``<data-dir>/server/tls/service-account.key``, created
beside the cluster CA on first start. The JWT framing (base64url segments, the raw ``r||s``
signature JWS uses instead of DER) is written here because it is a few lines over
``cryptography``, which the server already depends on, while a JWT library would be one more
dependency on the boards. A verified token names its ServiceAccount and pod by uid;
:meth:`ServiceAccountTokens.authenticate` then checks that both still exist with those uids,
so tokens of deleted pods or accounts stop working, as with kube-apiserver's bound tokens;
a request to the API must carry a token for the API's audience (the issuer, the default).
Like kube-apiserver's token cache, a token that authenticated is trusted again without those
checks for :data:`TRUSTED_SECONDS` (never past its expiry): the signature check and the two
lookups would otherwise be paid by every request of an in-cluster client. Deleting pods or
ServiceAccounts through this server forgets the namespace's trusted tokens at once
(:meth:`ServiceAccountTokens.forget`); other deletions (by another server, or by a controller
in process) take effect within that time, as kube-apiserver's take 10 s.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from k3py.cluster.server.auth import AUTHENTICATED_GROUP, UserInfo
from k3py.cluster.server.pki import write_private

ISSUER = "https://kubernetes.default.svc.cluster.local"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 2**32
_COORDINATE = 32  # bytes of r and s for P-256
TRUSTED_SECONDS = 3.0
_TRUSTED_MAX = 4096  # tokens remembered at once; the oldest is forgotten first
# Looks up an object's uid by (resource, namespace, name); None when it does not exist.
UidLookup = Callable[[str, str, str], Awaitable[str | None]]


class TokenError(ValueError):
    """A token that is malformed, badly signed, expired or not for this server."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ensure_signing_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The cluster's ServiceAccount signing key, created on first use."""
    path = data_dir / "server" / "tls" / "service-account.key"
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem)
        return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise TokenError(f"{path} is not an EC private key")
    return loaded


def service_account_user(namespace: str, name: str) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def user_of_account(namespace: str, name: str) -> UserInfo:
    """The user a ServiceAccount token authenticates as (kube-apiserver's groups)."""
    return UserInfo(
        service_account_user(namespace, name),
        (SA_GROUP, f"{SA_GROUP}:{namespace}", AUTHENTICATED_GROUP),
    )


@dataclass(frozen=True)
class Binding:
    """Who a token is for: the account and, for bound tokens, the pod."""

    namespace: str
    account: str
    account_uid: str
    pod: str = ""
    pod_uid: str = ""


class ServiceAccountTokens:
    """Signs and verifies the cluster's ServiceAccount tokens."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str = ISSUER) -> None:
        self._key = key
        self._public = key.public_key()
        self.issuer = issuer
        der = self._public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # kube-apiserver's key id: the SHA-256 of the public key's DER, base64url.
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        self.key_id = _b64(digest.finalize())
        # token -> (monotonic time until which it is trusted, its user, its namespace)
        self._trusted: dict[str, tuple[float, UserInfo, str]] = {}

    def issue(
        self,
        binding: Binding,
        audiences: Sequence[str],
        expiration_seconds: int = DEFAULT_EXPIRATION,
        now: float | None = None,
    ) -> tuple[str, int]:
        """A signed token and its expiry (seconds since the epoch)."""
        issued = int(now if now is not None else time.time())
        expires = issued + expiration_seconds
        private: dict[str, Any] = {
            "namespace": binding.namespace,
            "serviceaccount": {"name": binding.account, "uid": binding.account_uid},
        }
        if binding.pod:
            private["pod"] = {"name": binding.pod, "uid": binding.pod_uid}
        claims = {
            "aud": list(audiences) or [self.issuer],
            "exp": expires,
            "iat": issued,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": private,
            "nbf": issued,
            "sub": service_account_user(binding.namespace, binding.account),
        }
        header = {"alg": "ES256", "kid": self.key_id}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")
        return f"{signing_input}.{_b64(raw)}", expires

    def verify(self, token: str, now: float | None = None) -> tuple[Binding, Mapping[str, Any]]:
        """The binding a valid token names, and its claims; TokenError otherwise."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("not a JWT")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            raw = _unb64(parts[2])
        except (ValueError, UnicodeDecodeError):
            raise TokenError("malformed token") from None
        if not isinstance(header, dict) or header.get("alg") != "ES256":
            raise TokenError("unsupported signature algorithm")
        if len(raw) != 2 * _COORDINATE:
            raise TokenError("malformed signature")
        signature = encode_dss_signature(
            int.from_bytes(raw[:_COORDINATE], "big"), int.from_bytes(raw[_COORDINATE:], "big")
        )
        try:
            self._public.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:
            raise TokenError("invalid signature") from None
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer:
            raise TokenError("token from another issuer")
        moment = now if now is not None else time.time()
        if not isinstance(claims.get("exp"), int) or claims["exp"] < moment:
            raise TokenError("token has expired")
        if isinstance(claims.get("nbf"), int) and claims["nbf"] > moment + 60:
            raise TokenError("token is not valid yet")
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            raise TokenError("token names no ServiceAccount")
        account = private.get("serviceaccount") or {}
        pod = private.get("pod") or {}
        binding = Binding(
            str(private.get("namespace", "")),
            str(account.get("name", "")),
            str(account.get("uid", "")),
            str(pod.get("name", "")),
            str(pod.get("uid", "")),
        )
        if claims.get("sub") != service_account_user(binding.namespace, binding.account):
            raise TokenError("token subject does not match its ServiceAccount")
        return binding, claims

    async def authenticate(self, token: str, uid_of: UidLookup) -> UserInfo | None:
        """The ServiceAccount user of a valid token whose account (and pod) still exist."""
        moment = time.monotonic()
        trusted = self._trusted.get(token)
        if trusted is not None and trusted[0] > moment:
            return trusted[1]
        reviewed = await self.review(token, uid_of)
        if reviewed is None:
            return None
        binding, claims = reviewed
        audiences = claims.get("aud")
        if not isinstance(audiences, list) or self.issuer not in audiences:
            return None  # a token for another audience (say Vault) is no API credential
        user = user_of_account(binding.namespace, binding.account)
        left = float(claims["exp"]) - time.time()
        self._trusted.pop(token, None)
        self._trusted[token] = (moment + min(TRUSTED_SECONDS, left), user, binding.namespace)
        if len(self._trusted) > _TRUSTED_MAX:
            del self._trusted[next(iter(self._trusted))]
        return user

    async def review(
        self, token: str, uid_of: UidLookup
    ) -> tuple[Binding, Mapping[str, Any]] | None:
        """A valid token's binding and claims, its account (and pod) checked to exist now."""
        try:
            binding, claims = self.verify(token)
        except TokenError:
            return None
        found = await uid_of("serviceaccounts", binding.namespace, binding.account)
        if found is None or found != binding.account_uid:
            return None
        if binding.pod:
            pod_uid = await uid_of("pods", binding.namespace, binding.pod)
            if pod_uid is None or pod_uid != binding.pod_uid:
                return None
        return binding, claims

    def forget(self, namespace: str) -> None:
        """Check a namespace's tokens afresh (every namespace's for ""): its pods or accounts
        are being deleted."""
        if not namespace:
            self._trusted.clear()
        for token in [t for t, entry in self._trusted.items() if entry[2] == namespace]:
            del self._trusted[token]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def random_suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


SA_TOKENS = web.AppKey("k3py.sa-tokens", ServiceAccountTokens)
