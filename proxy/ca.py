"""The egress proxy's certificate authority, generated with `cryptography` on first start.

The CA lives in the proxy's own directory (mitmproxy's confdir, `<state>/proxy/`, 0750
root:<proxy group>): `mitmproxy-ca.pem` (private key + certificate, 0640 root:<proxy group>,
what mitmproxy's cert store loads) and `ca-cert.pem` (the certificate alone, 0644, what the
sandboxes trust). The proxy's user reads them and writes nothing there (confdir.py says why
and how root works in that directory). The private key never leaves it and is never mounted.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from proxy import confdir
from proxy.confdir import UnsafeConfdir

KEY_FILE = "mitmproxy-ca.pem"  # the name mitmproxy's CertStore.from_store() looks for
CERT_FILE = "ca-cert.pem"
# Written by the proxy process itself while still root (proxy/main.py): mitmproxy's DH
# parameters (from_files() creates the file when missing) and the diagnostics CA bundle.
DHPARAM_FILE = "mitmproxy-dhparam.pem"
UPSTREAM_BUNDLE = "upstream-ca.pem"
KEY_MODE, PUBLIC_MODE = 0o640, 0o644
VALID_DAYS = 3650


def ensure_ca(directory: Path, gid: int | None = None) -> Path:
    """Make `directory` the proxy's (ours, group `gid`) with the CA in it; returns the
    certificate's path. A CA already there is kept; files of another owner (the previous
    layout gave all of it to the proxy's user) are rewritten as ours, the key's contents kept.

    Blocking (key generation takes ~50 ms): call it off the event loop.
    """
    group = os.getegid() if gid is None else gid
    dir_fd = confdir.open_dir(directory, group)
    try:
        key, cert = confdir.entry(dir_fd, KEY_FILE), confdir.entry(dir_fd, CERT_FILE)
        for name in (DHPARAM_FILE, UPSTREAM_BUNDLE):
            confdir.entry(dir_fd, name)  # the proxy rewrites them; a link or fifo: refused now
        if key is None:
            key_pem, cert_pem = _generate()
            confdir.write_file(dir_fd, KEY_FILE, key_pem + cert_pem, KEY_MODE, group)
            confdir.write_file(dir_fd, CERT_FILE, cert_pem, PUBLIC_MODE, group)
            return directory / CERT_FILE
        rewrite_key = not confdir.settled(key, KEY_MODE, group)
        if rewrite_key or not confdir.settled(cert, PUBLIC_MODE, group):
            pem = confdir.read_file(dir_fd, KEY_FILE)
            cert_pem = _certificate_of(pem, directory / KEY_FILE)
            if rewrite_key:
                confdir.write_file(dir_fd, KEY_FILE, pem, KEY_MODE, group)
            confdir.write_file(dir_fd, CERT_FILE, cert_pem, PUBLIC_MODE, group)
    finally:
        os.close(dir_fd)
    return directory / CERT_FILE


def _certificate_of(pem: bytes, path: Path) -> bytes:
    """The PEM certificate in a key file, checked to match its key."""
    try:
        key = serialization.load_pem_private_key(pem, None)
        cert = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, TypeError) as exc:
        raise UnsafeConfdir(
            f"{path}: not a PEM CA key and certificate ({exc}); "
            "remove the directory to make a new CA"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != key.public_key().public_bytes(serialization.Encoding.DER, public):
        raise UnsafeConfdir(f"{path}: the certificate is not the key's")
    return cert.public_bytes(serialization.Encoding.PEM)


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
