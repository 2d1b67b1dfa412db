"""Make the node's private key and a certificate signing request, in a short-lived process.

``python -m k3py.cluster.agent.node.csr KEY_PATH NODE_NAME`` writes an ECDSA P-256 key to
KEY_PATH (mode 0600) and prints a PEM CSR for ``CN=system:node:<name>, O=system:nodes``. It runs
apart from the agent so that the long-running process never loads ``cryptography`` (about
7 MB of resident memory on a board with little to spare); the agent afterwards only needs
Python's ``ssl`` to use the key.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from k3py.cluster.api.jointoken import node_name_too_long
    from k3py.fsutil import write_atomic

    if len(argv) != 2:
        print("usage: python -m k3py.cluster.agent.node.csr KEY_PATH NODE_NAME", file=sys.stderr)
        return 64
    key_path, node = Path(argv[0]), argv[1]
    problem = node_name_too_long(node)
    if problem is not None:
        print(f"k3py: {problem}", file=sys.stderr)
        return 65
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_atomic(key_path, pem, 0o600)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    sys.stdout.write(csr.public_bytes(serialization.Encoding.PEM).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
