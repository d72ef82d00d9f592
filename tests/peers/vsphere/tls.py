"""The front's TLS identity: a self-signed certificate for 127.0.0.1 and localhost, made
with `cryptography` at start, written beside the log so clients can verify it as a CA file.
Its SHA-256 and SHA-1 thumbprints are in the colon-separated upper-case hex vSphere shows."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from pathlib import Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate file, key file) in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vsphere-peer vCenter")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "vcenter.pem", directory / "vcenter.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def thumbprints(cert_file: Path) -> tuple[str, str]:
    """(SHA-256, SHA-1) of the certificate's DER form, "AB:CD:..."."""
    import ssl
    der = ssl.PEM_cert_to_DER_cert(cert_file.read_text())

    def fmt(digest: bytes) -> str:
        return ":".join(f"{b:02X}" for b in digest)
    return fmt(hashlib.sha256(der).digest()), fmt(hashlib.sha1(der).digest())
