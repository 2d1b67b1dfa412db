"""Shared fixtures for the server's security tests: a fresh PKI per test and CSR helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k3py.cluster.server.pki import ClusterPKI, ensure_pki

HOSTNAME = "board1"
ADDRESSES = ("192.0.2.10", "2001:db8::10")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def pki(data_dir: Path) -> ClusterPKI:
    return ensure_pki(data_dir, ["k3py.example.org"], hostname=HOSTNAME, addresses=ADDRESSES)


def make_csr(
    common_name: str = "whatever", key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A node-side key and a PEM CSR for it, as an agent makes them."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
