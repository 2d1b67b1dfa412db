"""The cluster PKI: first start, reuse on restart, reissue on SAN change or expiry, CSR signing."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k3py.cluster.server.pki import (
    ClusterPKI,
    CSRError,
    PKIError,
    ensure_pki,
    first_service_ip,
    machine_addresses,
)
from tests.security.conftest import ADDRESSES, HOSTNAME, make_csr

FILES = (
    "server-ca.crt",
    "server-ca.key",
    "serving-kube-apiserver.crt",
    "serving-kube-apiserver.key",
    "client-admin.crt",
    "client-admin.key",
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(i) for i in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def _subject(cert: x509.Certificate) -> tuple[str, list[str]]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return str(cn), [str(o) for o in orgs]


def _snapshot(pki: ClusterPKI) -> dict[str, bytes]:
    return {name: (pki.tls_dir / name).read_bytes() for name in FILES}


def test_first_start_creates_ca_serving_and_admin_certificates(
    pki: ClusterPKI, data_dir: Path
) -> None:
    assert pki.tls_dir == data_dir / "server" / "tls"
    for name in FILES:
        mode = stat.S_IMODE((pki.tls_dir / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name
    assert stat.S_IMODE(pki.tls_dir.stat().st_mode) == 0o700

    ca = _cert(pki.ca_cert)
    assert ca.subject == ca.issuer
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3649) < lifetime < datetime.timedelta(days=3651)

    serving = _cert(pki.serving_cert)
    serving.verify_directly_issued_by(ca)
    assert _sans(serving) == {
        HOSTNAME,
        *ADDRESSES,
        "127.0.0.1",
        "::1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.43.0.1",
        "k3py.example.org",
    }
    eku = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    admin = _cert(pki.admin_cert)
    admin.verify_directly_issued_by(ca)
    assert _subject(admin) == ("system:admin", ["system:masters"])
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.ca_bundle() == pki.ca_cert.read_bytes()


def test_restart_reuses_every_file(pki: ClusterPKI, data_dir: Path) -> None:
    before = _snapshot(pki)
    again = ensure_pki(data_dir, ["k3py.example.org"], hostname=HOSTNAME, addresses=ADDRESSES)
    assert _snapshot(again) == before


def test_san_change_reissues_only_the_serving_certificate(pki: ClusterPKI, data_dir: Path) -> None:
    before = _snapshot(pki)
    again = ensure_pki(
        data_dir,
        ["k3py.example.org", "203.0.113.7"],
        hostname=HOSTNAME,
        addresses=ADDRESSES,
        service_cidr="10.96.0.0/12",
    )
    after = _snapshot(again)
    changed = {name for name in FILES if before[name] != after[name]}
    assert changed == {"serving-kube-apiserver.crt"}
    sans = _sans(_cert(again.serving_cert))
    assert {"203.0.113.7", "10.96.0.1"} <= sans
    assert "10.43.0.1" not in sans


def test_expiring_serving_certificate_is_renewed(pki: ClusterPKI, data_dir: Path) -> None:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    old = _cert(pki.serving_cert)
    now = datetime.datetime.now(datetime.UTC)
    soon = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=300))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki.serving_cert.write_bytes(soon.public_bytes(serialization.Encoding.PEM))
    again = ensure_pki(data_dir, ["k3py.example.org"], hostname=HOSTNAME, addresses=ADDRESSES)
    renewed = _cert(again.serving_cert)
    assert renewed.not_valid_after_utc - now > datetime.timedelta(days=360)
    assert renewed.public_key() == old.public_key()  # same key, new certificate


def test_half_a_ca_is_refused_rather_than_replaced(pki: ClusterPKI, data_dir: Path) -> None:
    pki.ca_key.unlink()
    with pytest.raises(PKIError, match="only half of the cluster CA"):
        ensure_pki(data_dir, [], hostname=HOSTNAME, addresses=ADDRESSES)


def test_sign_csr_issues_a_client_certificate_for_the_requesters_key(pki: ClusterPKI) -> None:
    key, csr = make_csr("ignored-subject")
    cert = x509.load_pem_x509_certificate(pki.sign_csr(csr, "system:node:board2", ["system:nodes"]))
    cert.verify_directly_issued_by(_cert(pki.ca_cert))
    assert cert.public_key() == key.public_key()
    assert _subject(cert) == ("system:node:board2", ["system:nodes"])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < lifetime <= datetime.timedelta(days=365)


def test_sign_csr_refuses_garbage_forged_and_weak_requests(pki: ClusterPKI) -> None:
    with pytest.raises(CSRError, match="not a PEM CSR"):
        pki.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n", "u", [])
    # A CSR whose signature does not verify: nothing proves the requester owns the key.
    _, csr = make_csr()
    der = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # a bit inside the ECDSA signature's s value
    forged_pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRError, match="signature"):
        pki.sign_csr(forged_pem, "u", [])
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CSRError, match="2048"):
        pki.sign_csr(weak_csr, "u", [])


def test_service_ip_and_machine_addresses() -> None:
    assert first_service_ip("10.43.0.0/16") == "10.43.0.1"
    assert first_service_ip("fd00:43::/112") == "fd00:43::1"
    with pytest.raises(PKIError, match="service-cidr"):
        first_service_ip("not-a-cidr")
    for address in machine_addresses():
        parsed = ipaddress.ip_address(address)
        assert not parsed.is_loopback
        assert not parsed.is_link_local
