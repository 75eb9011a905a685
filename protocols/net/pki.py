"""A model owner's small PKI: a CA, server and client certificates, and the TLS contexts using them.

The model owner runs its own certificate authority (``secureml keys ca``), issues the server a
certificate for its host names (``secureml keys server``) and each client one naming it
(``secureml keys client --name alice``).  The server then requires a client certificate signed by
that CA (mutual TLS) and the subject's common name becomes the client's identity in the audit log
and in per-client query budgets.  Clients verify the server certificate *and its host name*.

Keys are ECDSA P-256 (small, fast handshakes), certificates X.509 v3 via ``cryptography``;
private keys are written unencrypted with mode 0600 -- protect them like passwords.
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from pathlib import Path

from secureml.errors import ProtocolError

__all__ = ["make_ca", "issue", "server_context", "client_context", "write_private"]


def _name(cn: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_private(path: str | Path, data: bytes) -> Path:
    """Write a secret file readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _pem_pair(key, cert) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    k = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    return k, cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str = "secureml model owner CA", days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed CA: (private key PEM, certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return _pem_pair(key, cert)


def issue(ca_key_pem: bytes, ca_cert_pem: bytes, common_name: str, *, server: bool,
          hosts: list[str] | None = None, days: int = 825) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA: (private key PEM, certificate PEM).

    ``server=True``: serverAuth, with ``hosts`` (DNS names or IP addresses) as subject
    alternative names -- what clients check the host name against.  ``server=False``: clientAuth;
    ``common_name`` is the client's identity.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                              else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if server:
        names: list[x509.GeneralName] = []
        for h in hosts or [common_name]:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return _pem_pair(key, cert)


def server_context(cert: str | Path, key: str | Path, client_ca: str | Path | None = None,
                   cert_optional: bool = False) -> ssl.SSLContext:
    """TLS >= 1.2 server context; with ``client_ca`` every client must present a certificate
    signed by it (mutual TLS) -- or, with ``cert_optional`` (when tokens are accepted too), may
    present none; a certificate that is presented must still verify."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            ctx.load_verify_locations(cafile=str(client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL if cert_optional else ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ProtocolError(f"cannot load TLS certificate/key: {exc}") from None
    return ctx


def client_context(ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """TLS >= 1.2 client context that verifies the server certificate and host name (against
    ``ca``, else the system store) and presents ``cert``/``key`` when given (mutual TLS)."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise ProtocolError(f"cannot load TLS files: {exc}") from None
    return ctx
