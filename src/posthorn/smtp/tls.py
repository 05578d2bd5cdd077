"""The TLS certificate of the submission server: the configured one, or a generated one.

With ``TLS_CERT``/``TLS_KEY`` set, those PEM files are used. Otherwise a self-signed
certificate for ``HOSTNAME`` is generated on first start into ``DATA_DIR`` (one PEM file with
the key and the certificate, mode 0600) and kept, so that clients which pin it keep working
across restarts. Several processes sharing a data directory agree on one file: it is written
aside and linked into place, which fails if another process got there first.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from posthorn.settings import Settings

log = logging.getLogger("posthorn.smtp")

GENERATED_FILE = "smtp-tls.pem"
# RSA rather than ECDSA: every client library and old relay can use it.
RSA_BITS = 2048
VALID_DAYS = 3650


def server_context(settings: Settings) -> ssl.SSLContext:
    """A server-side context with the configured or generated certificate loaded."""
    cert, key = certificate_files(settings)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 or later
    context.load_cert_chain(cert, key)
    return context


def certificate_files(settings: Settings) -> tuple[Path, Path | None]:
    """The certificate and key files to load (``None``: the key is in the certificate file)."""
    if settings.tls_cert is not None:
        return settings.tls_cert, settings.tls_key
    if settings.tls_key is not None:
        raise ValueError("POSTHORN_TLS_KEY is set but POSTHORN_TLS_CERT is not")
    path = settings.data_dir / GENERATED_FILE
    if not path.exists():
        fingerprint = generate_self_signed(path, settings.hostname)
        if fingerprint is not None:
            log.warning(
                "generated a self-signed TLS certificate for %s into %s (SHA-256 %s); "
                "set POSTHORN_TLS_CERT and POSTHORN_TLS_KEY to use your own",
                settings.hostname,
                path,
                fingerprint,
                extra={"action": "smtp_tls_generated", "path": str(path)},
            )
    return path, None


def generate_self_signed(path: Path, hostname: str) -> str | None:
    """Write a key and a self-signed certificate to ``path`` unless it exists by then.

    Returns the certificate's SHA-256 fingerprint, or ``None`` when another process made the
    file first.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(hostname)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".smtp-tls-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.link(temporary, path)
    except FileExistsError:
        return None
    finally:
        os.unlink(temporary)
    return certificate.fingerprint(hashes.SHA256()).hex(":")


def _general_name(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)
