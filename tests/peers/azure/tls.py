"""The harness ARM's TLS identity: a self-signed certificate for 127.0.0.1 and localhost,
made with `cryptography` at start and written to the workdir, so clients verify it as a CA
file (azure-core refuses bearer tokens over plain http; the product passes the file as
`connection_verify`)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

CERT_NAME, KEY_NAME = "arm.pem", "arm.key"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate file, key file) in `directory`; the key is written first, so a client
    that sees the certificate file can use it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azure-peer ARM")])
    now = datetime.datetime.now(datetime.UTC)
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
    cert_file, key_file = directory / CERT_NAME, directory / KEY_NAME
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    partial = cert_file.with_suffix(".tmp")
    partial.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    partial.replace(cert_file)  # atomic: a polling client never reads half a file
    return cert_file, key_file
