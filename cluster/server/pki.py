"""The server's certificate authority and the certificates it issues.

On first start :func:`ensure_pki` creates, under ``<data-dir>/server/tls/``, a cluster CA (ECDSA
P-256, self-signed, 10 years), the API server's serving certificate (1 year; SANs: hostname,
the machine's addresses, loopback, the ``kubernetes`` service names, the first service IP and
every ``--tls-san``) and the admin client certificate (``CN=system:admin``, ``O=system:masters``,
1 year). Restarts reuse all of it; the serving certificate is reissued when its SAN set changes,
and a leaf certificate within 90 days of expiry is renewed with the same key, as K3s does.
:class:`ClusterPKI` serves the CA bundle, builds the server's TLS context (client certificates
are asked for and verified, but optional so that bearer tokens and anonymous paths still work)
and signs node certificate requests. Keys never leave this directory and are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import logging
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k3py.errors import K3pyError
from k3py.fsutil import write_atomic

logger = logging.getLogger("k3py.server.pki")

DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
KUBERNETES_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
ADMIN_USER = "system:admin"
ADMIN_GROUP = "system:masters"

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=90)
# Backdating absorbs small clock differences between boards (many have no RTC).
BACKDATE = datetime.timedelta(hours=1)
MAX_CSR_BYTES = 16 * 1024


class PKIError(K3pyError):
    """The server's certificates cannot be created, loaded or issued."""


class CSRError(PKIError):
    """A certificate signing request that is malformed or uses an unacceptable key."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file atomically with ``mode`` from its first byte, the rename synced too.

    Keys and certificates are written once and trusted ever after: a rename that a power cut
    undoes would leave the cluster without its CA.
    """
    write_atomic(path, data, mode, sync_directory=True)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _normalise_san(value: str) -> str:
    value = value.strip()
    if _is_ip(value):
        return str(ipaddress.ip_address(value))
    return value.lower().rstrip(".")


def first_service_ip(service_cidr: str) -> str:
    """The ``kubernetes`` Service's cluster IP: the first address of the service CIDR."""
    try:
        network = ipaddress.ip_network(service_cidr, strict=False)
    except ValueError:
        raise PKIError(
            f"--service-cidr {service_cidr!r} is not a network such as 10.43.0.0/16"
        ) from None
    return str(network.network_address + 1)


def _addresses_from_proc() -> list[str]:
    """Every local unicast address, read from /proc (no netlink library needed)."""
    found: list[str] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    # fib_trie lists "|-- <addr>" followed by "/32 host LOCAL" for each local IPv4 address.
    for previous, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line and "|--" in previous:
            found.append(previous.split("|--", 1)[1].strip())
    try:
        rows = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        rows = []
    for row in rows:
        fields = row.split()
        if len(fields) < 4 or int(fields[3], 16) != 0:  # keep global scope only
            continue
        raw = fields[0]
        found.append(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    return found


def machine_addresses() -> list[str]:
    """The machine's non-loopback addresses, for the serving certificate's SANs."""
    result: list[str] = []
    for text in _addresses_from_proc():
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address.is_loopback or address.is_link_local or str(address) in result:
            continue
        result.append(str(address))
    return result


def serving_sans(
    hostname: str,
    addresses: Iterable[str],
    tls_sans: Iterable[str],
    service_cidr: str = DEFAULT_SERVICE_CIDR,
) -> frozenset[str]:
    """The serving certificate's subject alternative names, normalised."""
    names = {hostname, *addresses, *LOOPBACK_ADDRESSES, *KUBERNETES_NAMES, *tls_sans}
    names.add(first_service_ip(service_cidr))
    return frozenset(_normalise_san(n) for n in names if n and n.strip())


def _san_extension(sans: Iterable[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for name in sorted(sans):
        if _is_ip(name):
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        else:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def _cert_sans(cert: x509.Certificate) -> frozenset[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    names = [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    names += ext.get_values_for_type(x509.DNSName)
    return frozenset(_normalise_san(n) for n in names)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    *,
    server: bool,
    sans: Iterable[str] = (),
) -> x509.Certificate:
    now = _now()
    not_after = min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(_san_extension(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    subject = _name(f"k3py-server-ca@{int(now.timestamp())}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise PKIError(f"cannot load the private key {path}: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{path} is not an ECDSA key; remove it so that k3py creates a new one")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise PKIError(f"cannot load the certificate {path}: {err}") from None


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _needs_renewal(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() < RENEW_BEFORE


@dataclass(frozen=True)
class ClusterPKI:
    """The cluster CA and the server's own certificates, loaded from ``<data-dir>/server/tls``."""

    tls_dir: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    _ca: x509.Certificate = field(repr=False)
    _ca_private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def in_dir(cls, tls_dir: Path) -> ClusterPKI:
        """Load an existing PKI without creating or renewing anything."""
        ca_cert = tls_dir / "server-ca.crt"
        ca_key = tls_dir / "server-ca.key"
        return cls(
            tls_dir=tls_dir,
            ca_cert=ca_cert,
            ca_key=ca_key,
            serving_cert=tls_dir / "serving-kube-apiserver.crt",
            serving_key=tls_dir / "serving-kube-apiserver.key",
            admin_cert=tls_dir / "client-admin.crt",
            admin_key=tls_dir / "client-admin.key",
            _ca=_load_cert(ca_cert),
            _ca_private_key=_load_key(ca_key),
        )

    def ca_bundle(self) -> bytes:
        """The CA bundle exactly as ``/cacerts`` serves it (the join token pins its sha256)."""
        return self.ca_cert.read_bytes()

    def serving_sans(self) -> frozenset[str]:
        return _cert_sans(_load_cert(self.serving_cert))

    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+ with the serving certificate; client certificates signed by the CA are
        verified and identify the user, and connections without one are let through."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.serving_cert, self.serving_key)
        context.load_verify_locations(cafile=str(self.ca_cert))
        context.verify_mode = ssl.CERT_OPTIONAL
        # Go clients (kubectl) offer h2 first; aiohttp speaks HTTP/1.1 only.
        context.set_alpn_protocols(["http/1.1"])
        # No TLS 1.3 session tickets: client-go, aiohttp and the agent never resume a session,
        # and issuing the two default tickets was a third of the server's cost of a handshake
        # (1.1 -> 0.74 ms), which a burst of new connections pays on the event loop.
        context.num_tickets = 0
        return context

    def client_ssl_context(
        self, cert: Path | None = None, key: Path | None = None
    ) -> ssl.SSLContext:
        """A client context trusting only the cluster CA, presenting ``cert``/``key`` if given
        (the admin credential by default)."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(cert or self.admin_cert, key or self.admin_key)
        return context

    def sign_csr(self, csr_pem: bytes, user: str, groups: Sequence[str]) -> bytes:
        """Issue a client certificate (``CN=user``, ``O=groups``, 1 year) for the key in a PEM
        certificate signing request. The CSR's own subject is ignored; its signature must hold,
        which proves the requester owns the private key."""
        if not user:
            raise CSRError("the certificate's user name is empty")
        if len(csr_pem) > MAX_CSR_BYTES:
            raise CSRError(f"the certificate signing request is larger than {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise CSRError(f"the certificate signing request is not a PEM CSR: {err}") from None
        public_key = csr.public_key()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in {"secp256r1", "secp384r1"}:
                raise CSRError(f"ECDSA curve {public_key.curve.name} is not accepted (use P-256)")
        elif isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise CSRError("RSA keys shorter than 2048 bits are not accepted")
        elif not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise CSRError("the CSR's key must be ECDSA (P-256/P-384), RSA or Ed25519")
        if not csr.is_signature_valid:
            raise CSRError("the certificate signing request's signature does not verify")
        cert = _issue(self._ca, self._ca_private_key, _name(user, groups), public_key, server=False)
        logger.info(
            "issued client certificate",
            extra={
                "fields": {"user": user, "groups": ",".join(groups), "serial": cert.serial_number}
            },
        )
        return _cert_pem(cert)


def _ensure_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = tls_dir / "server-ca.crt", tls_dir / "server-ca.key"
    if cert_path.exists() and key_path.exists():
        cert, key = _load_cert(cert_path), _load_key(key_path)
        if cert.public_key() != key.public_key():
            raise PKIError(f"{cert_path} does not match {key_path}; restore the pair from backup")
        return cert, key
    if cert_path.exists() or key_path.exists():
        present = cert_path if cert_path.exists() else key_path
        raise PKIError(
            f"only half of the cluster CA is present ({present}); restore the missing file from "
            "backup, or remove both to create a new cluster CA (every node must then rejoin)"
        )
    cert, key = _new_ca()
    write_private(key_path, _key_pem(key))
    write_private(cert_path, _cert_pem(cert), 0o644)
    logger.info("created cluster CA", extra={"fields": {"path": str(cert_path)}})
    return cert, key


def _ensure_leaf(
    cert_path: Path,
    key_path: Path,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    *,
    server: bool,
    sans: frozenset[str] = frozenset(),
) -> None:
    key = _load_key(key_path) if key_path.exists() else None
    if key is not None and cert_path.exists():
        cert = _load_cert(cert_path)
        reasons = []
        if not _signed_by(cert, ca[0]):
            reasons.append("not signed by the cluster CA")
        if cert.public_key() != key.public_key():
            reasons.append("does not match its key")
        if _needs_renewal(cert):
            reasons.append("expires within 90 days")
        if server and _cert_sans(cert) != sans:
            reasons.append("SANs changed")
        if not reasons:
            return
        logger.info(
            "reissuing certificate",
            extra={"fields": {"path": str(cert_path), "reason": "; ".join(reasons)}},
        )
    if key is None:
        key = _new_key()
        write_private(key_path, _key_pem(key))
    cert = _issue(ca[0], ca[1], subject, key.public_key(), server=server, sans=sans)
    write_private(cert_path, _cert_pem(cert), 0o644)


def ensure_pki(
    data_dir: Path,
    sans: Sequence[str],
    *,
    hostname: str | None = None,
    addresses: Sequence[str] | None = None,
    service_cidr: str = DEFAULT_SERVICE_CIDR,
) -> ClusterPKI:
    """Create the cluster's PKI on first start and reuse it after, reissuing what is stale.

    ``sans`` are the extra ``--tls-san`` names; ``hostname`` and ``addresses`` default to this
    machine's, ``service_cidr`` gives the ``kubernetes`` Service IP.
    """
    tls_dir = data_dir / "server" / "tls"
    try:
        tls_dir.mkdir(parents=True, exist_ok=True)
        # <data-dir>/server holds the CA key, tokens and the datastore: root's eyes only.
        tls_dir.parent.chmod(0o700)
        tls_dir.chmod(0o700)
        ca = _ensure_ca(tls_dir)
        wanted = serving_sans(
            hostname if hostname is not None else socket.gethostname(),
            machine_addresses() if addresses is None else addresses,
            sans,
            service_cidr,
        )
        _ensure_leaf(
            tls_dir / "serving-kube-apiserver.crt",
            tls_dir / "serving-kube-apiserver.key",
            ca,
            _name("kube-apiserver"),
            server=True,
            sans=wanted,
        )
        _ensure_leaf(
            tls_dir / "client-admin.crt",
            tls_dir / "client-admin.key",
            ca,
            _name(ADMIN_USER, [ADMIN_GROUP]),
            server=False,
        )
    except PermissionError as err:
        raise PKIError(
            f"cannot write the server's certificates in {tls_dir}: {err.strerror} "
            "(run as root or choose a writable --data-dir)"
        ) from None
    except OSError as err:
        raise PKIError(f"cannot write the server's certificates in {tls_dir}: {err}") from None
    return ClusterPKI.in_dir(tls_dir)
