"""The egress proxy's certificate authority, generated with `cryptography` on first start.

The CA lives in the proxy's own directory: `mitmproxy-ca.pem` (private key + certificate,
0600, what mitmproxy's cert store loads) and `ca-cert.pem` (the certificate alone, what the
sandboxes trust). The private key never leaves that directory and is never mounted anywhere.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "mitmproxy-ca.pem"  # the name mitmproxy's CertStore.from_store() looks for
CERT_FILE = "ca-cert.pem"
VALID_DAYS = 3650


def ensure_ca(directory: Path, owner: tuple[int, int] | None = None) -> Path:
    """Create the CA in `directory` unless it exists; returns the certificate's path.

    Blocking (key generation takes ~50 ms): call it off the event loop.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if not key_path.exists():
        key_pem, cert_pem = _generate()
        _write_private(key_path, key_pem + cert_pem)
        cert_path.write_bytes(cert_pem)
    elif not cert_path.exists():
        cert = x509.load_pem_x509_certificates(key_path.read_bytes())[0]
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    directory.chmod(0o700)
    key_path.chmod(0o600)
    cert_path.chmod(0o644)
    if owner is not None:
        for path in (directory, key_path, cert_path):
            os.chown(path, *owner)
    return cert_path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _generate() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "sandboxd egress proxy CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sandboxd"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
