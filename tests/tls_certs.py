"""A throwaway PKI for the DICOM TLS tests: a CA, certificates it signs (for Orthanc, for us, for
dcmtk), and the bad ones (expired, not yet valid, another CA's, a key of another certificate).
Generated with cryptography, never downloaded; EC P-256 keys, so it takes milliseconds."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


class Authority:
    """A CA that signs certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "asyncdicom test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY)
            .not_valid_after(NOW + 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        slug = name.replace(" ", "-")
        self.pem = folder / f"{slug}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        *,
        names: tuple[str, ...] = ("localhost",),
        addresses: tuple[str, ...] = ("127.0.0.1",),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Pair:
        """A certificate for a peer (server and client use) and its key, as PEM files."""
        key = _key()
        alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        alternatives += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else stem)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - DAY)
            .not_valid_after(not_after or NOW + 90 * DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pem = self.folder / f"{stem}.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Pair(pem, _write_key(key, self.folder / f"{stem}.key"))


@dataclass(frozen=True)
class Pki:
    """Everything the TLS tests use."""

    ca: Path
    orthanc: Pair  # localhost / 127.0.0.1
    us: Pair
    dcmtk: Pair
    expired: Pair
    future: Pair
    misnamed: Pair  # names another host only
    stranger: Pair  # signed by another CA
    stranger_ca: Path
    wrong_key: Pair  # our certificate with the key of another


def make_pki(folder: Path) -> Pki:
    ca = Authority(folder)
    other = Authority(folder / "other", "another CA")
    us = ca.issue("asyncdicom")
    orthanc = ca.issue("orthanc")
    return Pki(
        ca=ca.pem,
        orthanc=orthanc,
        us=us,
        dcmtk=ca.issue("dcmtk"),
        expired=ca.issue("expired", not_before=NOW - 30 * DAY, not_after=NOW - DAY),
        future=ca.issue("future", not_before=NOW + 10 * DAY, not_after=NOW + 40 * DAY),
        misnamed=ca.issue("misnamed", names=("pacs.elsewhere.example",), addresses=()),
        stranger=other.issue("stranger"),
        stranger_ca=other.pem,
        wrong_key=Pair(us.cert, orthanc.key),
    )
