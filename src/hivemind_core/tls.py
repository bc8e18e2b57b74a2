"""TLS for the hub listener: a user certificate, or a self-signed one made on first start.

The generated certificate uses an EC P-256 key and a SHA-256 signature (the
reference hub generates RSA keys signed with SHA-1), is valid for ``localhost``,
the machine's host name and the loopback addresses, and is written with mode
0600 for the key.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path

__all__ = ["generate_self_signed", "server_ssl_context"]

LOG = logging.getLogger(__name__)

CERT_NAME = "hivemind.crt"
KEY_NAME = "hivemind.key"


def generate_self_signed(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    *,
    common_name: str | None = None,
    days: int = 3650,
) -> None:
    """Write a new self-signed certificate and its private key (PEM).

    Raises:
        OSError: the files cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = common_name or socket.gethostname() or "localhost"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HiveMind"),
            x509.NameAttribute(NameOID.COMMON_NAME, host),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if host != "localhost":
        alt.append(x509.DNSName(host))
    alt += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = Path(key_path), Path(cert_path)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    LOG.info("generated a self-signed certificate for %s at %s", host, cert_path)


def server_ssl_context(
    cert: str | os.PathLike[str] | None,
    key: str | os.PathLike[str] | None,
    cert_dir: str | os.PathLike[str],
) -> ssl.SSLContext:
    """A server TLS context from ``cert``/``key``, generating a pair in ``cert_dir`` when unset.

    Raises:
        FileNotFoundError: a given certificate or key file does not exist.
        ssl.SSLError: the files do not hold a usable certificate and key.
    """
    if cert or key:
        if not (cert and key):
            raise FileNotFoundError("TLS needs both a certificate and a key file")
        cert_path, key_path = Path(cert), Path(key)
        for path in (cert_path, key_path):
            if not path.exists():
                raise FileNotFoundError(f"TLS file not found: {path}")
    else:
        cert_path, key_path = Path(cert_dir) / CERT_NAME, Path(cert_dir) / KEY_NAME
        if not (cert_path.exists() and key_path.exists()):
            generate_self_signed(cert_path, key_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx
