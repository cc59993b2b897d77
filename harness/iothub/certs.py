"""A throwaway CA and a server certificate (DNS + IP SANs) minted with ``cryptography``.

Devices trust the CA through ``server_verification_cert`` (PEM text) and dial ``GatewayHostName``
(a loopback IP, or a DNS name in the SANs). Keys are EC P-256: cheap to mint and to handshake.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerCerts:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None

    def server_context(self) -> ssl.SSLContext:
        """TLS 1.2+ server context (the SDK offers exactly TLS 1.2)."""
        if self.cert_path is None or self.key_path is None:
            raise ValueError("write the certificates to a directory first (ServerCerts.write)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting the CA (for tests and the raw load client)."""
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def write(self, directory: Path) -> ServerCerts:
        directory.mkdir(parents=True, exist_ok=True)
        ca, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
        ca.write_bytes(self.ca_pem)
        cert.write_bytes(self.cert_pem + self.ca_pem)
        key.write_bytes(self.key_pem)
        key.chmod(0o600)
        return ServerCerts(self.ca_pem, self.cert_pem, self.key_pem, ca, cert, key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def mint(
    dns_names: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
    *,
    days: int = 365,
) -> ServerCerts:
    """Mint a CA and a server certificate for the given DNS names and IPs (both go into the SANs)."""
    dns = sorted(set(dns_names))
    ips = sorted(set(ip_addresses))
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("enginehub local IoT Hub emulator CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0] if dns else ips[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    LOG.debug("minted server certificate for %s %s", dns, ips)
    return ServerCerts(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def load_or_mint(directory: Path, dns_names: Iterable[str], ip_addresses: Iterable[str]) -> ServerCerts:
    """Reuse certificates in ``directory`` if they cover the names, else mint and write new ones."""
    dns, ips = set(dns_names), set(ip_addresses)
    ca, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    if ca.is_file() and cert.is_file() and key.is_file():
        try:
            loaded = x509.load_pem_x509_certificate(cert.read_bytes())
            san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have_dns = set(san.get_values_for_type(x509.DNSName))
            have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
            fresh = loaded.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
                days=1
            )
            if dns <= have_dns and ips <= have_ips and fresh:
                return ServerCerts(ca.read_bytes(), cert.read_bytes(), key.read_bytes(), ca, cert, key)
        except (ValueError, x509.ExtensionNotFound) as exc:
            LOG.warning("certificates in %s unusable (%s); minting new ones", directory, exc)
    return mint(dns, ips).write(directory)
