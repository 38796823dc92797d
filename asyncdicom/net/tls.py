"""DICOM TLS (PS3.15 B.1, the secure transport connection profile): contexts from the config's
PEM files, handshakes on plain sockets, and errors that name the file or the peer.

Built on the standard library's ``ssl`` (TLS 1.2 or newer, certificates verified against
``ca_file``); the certificate files are inspected with ``cryptography`` beforehand (expiry, a key
that does not match its certificate), because ``ssl`` only says "PEM lib" or fails at the peer.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asyncdicom.errors import ConfigError, TlsRefused

if TYPE_CHECKING:  # cryptography loads only when a config has TLS files to check
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

MAX_PEM_BYTES = 1024 * 1024
"""A PEM file larger than this is refused before it is read (a CA bundle is ~200 KB)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of one side (``where`` is the config key path that names them)."""

    where: str
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    verify_hostname: bool = True
    require_client_cert: bool = True


# --- checking the files (config time: exit 2, nothing sent) ------------------------------------


def check(files: TlsFiles, *, server: bool, now: datetime.datetime | None = None) -> list[str]:
    """Raise ConfigError for the first unusable file (missing, unreadable, too large, not PEM, a
    certificate expired or not yet valid, a key that does not match the certificate, an
    encrypted key); return warnings (a key others can read, a certificate expiring soon)."""
    from cryptography.hazmat.primitives import serialization

    now = now or datetime.datetime.now(datetime.UTC)
    where = files.where
    warnings: list[str] = []
    if (files.cert_file is None) != (files.key_file is None):
        missing = "key_file" if files.key_file is None else "cert_file"
        msg = f"{where}.{missing}"
        raise ConfigError(msg, "cert_file and key_file come together; give both, or neither")
    if server and files.cert_file is None:
        msg = f"{where}.cert_file"
        raise ConfigError(msg, "our storage SCP needs a certificate and its key to speak TLS")
    if server and files.require_client_cert and files.ca_file is None:
        msg = f"{where}.ca_file"
        raise ConfigError(
            msg,
            "require_client_cert needs the CA certificates that sign the peers' certificates; give ca_file",
        )
    if files.ca_file is not None:
        authorities = _certificates(files.ca_file, f"{where}.ca_file")
        if all(_expired(cert, now) for cert in authorities):
            msg = f"{where}.ca_file"
            raise ConfigError(msg, f"every certificate in {files.ca_file} has expired")
    if files.cert_file is not None and files.key_file is not None:
        chain = _certificates(files.cert_file, f"{where}.cert_file")
        own = chain[0]
        if _expired(own, now):
            msg = f"{where}.cert_file"
            raise ConfigError(
                msg,
                f"the certificate in {files.cert_file} expired on {own.not_valid_after_utc:%Y-%m-%d}; renew it",
            )
        if own.not_valid_before_utc > now:
            msg = f"{where}.cert_file"
            raise ConfigError(
                msg,
                f"the certificate in {files.cert_file} is valid only from {own.not_valid_before_utc:%Y-%m-%d %H:%M} "
                "UTC; check this machine's clock",
            )
        if own.not_valid_after_utc - now < datetime.timedelta(days=14):
            warnings.append(
                f"{where}.cert_file: the certificate expires on {own.not_valid_after_utc:%Y-%m-%d}; renew it soon"
            )
        key = _private_key(files.key_file, f"{where}.key_file")
        if _public(key) != own.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            msg = f"{where}.key_file"
            raise ConfigError(
                msg,
                f"the key in {files.key_file} does not belong to the certificate in {files.cert_file}",
            )
        mode = files.key_file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"{where}.key_file: {files.key_file} can be read by other users; chmod 600 it")
    return warnings


def _read(path: Path, where: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_PEM_BYTES:
            raise ConfigError(where, f"{path} has {size} bytes, more than a PEM file of certificates or a key needs")
        with path.open("rb") as handle:
            return handle.read(MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(where, f"file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(where, f"unable to read {path} as {exc.strerror or type(exc).__name__}") from None


def _certificates(path: Path, where: str) -> list[x509.Certificate]:
    from cryptography import x509

    data = _read(path, where)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise ConfigError(where, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return certificates


def _private_key(path: Path, where: str) -> PrivateKeyTypes:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read(path, where)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            where, f"the key in {path} is encrypted; give an unencrypted key and protect it with chmod 600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(where, f"{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)") from None


def _public(key: PrivateKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _expired(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_after_utc < now


# --- contexts (run time) ------------------------------------------------------------------------


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """The context of our associations to the PACS (ConfigError if ``ssl`` refuses a file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = files.verify_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    _load(context, files)
    if files.ca_file is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The context of our storage SCP (ConfigError if ``ssl`` refuses a file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED if files.require_client_cert else ssl.CERT_OPTIONAL
    _load(context, files)
    return context


def _load(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        if files.ca_file is not None:
            context.load_verify_locations(cafile=os.fspath(files.ca_file))
    except (ssl.SSLError, OSError) as exc:
        msg = f"{files.where}.ca_file"
        raise ConfigError(msg, f"ssl refused {files.ca_file}: {_reason(exc)}") from None
    try:
        if files.cert_file is not None and files.key_file is not None:
            context.load_cert_chain(os.fspath(files.cert_file), os.fspath(files.key_file))
    except (ssl.SSLError, OSError) as exc:
        msg = f"{files.where}.cert_file"
        raise ConfigError(msg, f"ssl refused {files.cert_file}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else (getattr(exc, "strerror", None) or str(exc))


# --- handshakes ---------------------------------------------------------------------------------


def connect(sock: socket.socket, context: ssl.SSLContext, host: str, where: str, timeout: float) -> ssl.SSLSocket:
    """Our side of the handshake with the PACS, on a connected socket (closed on failure): a
    TlsRefused whose message says what was wrong and which key to fix."""
    sock.settimeout(timeout)
    return _handshake(
        sock,
        lambda: context.wrap_socket(sock, server_hostname=host),
        f"Unable to connect to {where} over TLS as ",
        "pacs",
        "the PACS closed the connection",
        "; is pacs.port a DICOM TLS port? (without TLS there, remove pacs.tls)",
    )


def refused_after_handshake(exc: ssl.SSLError, where: str) -> TlsRefused:
    """A TLS alert read after our side of the handshake ended: with TLS 1.3 the server checks our
    certificate only then."""
    if isinstance(exc, ssl.SSLEOFError) or "EOF" in str(getattr(exc, "reason", "") or ""):
        why = (
            "the PACS ended the connection right after the TLS handshake, which is how it refuses our certificate: "
            "give pacs.tls.cert_file and key_file, signed by a CA the PACS trusts"
        )
    else:
        why = _refusal(exc, "pacs")
    msg = f"Unable to associate with {where} over TLS as {why}"
    return TlsRefused(msg)


def accept(sock: socket.socket, context: ssl.SSLContext, peer: str, timeout: float) -> ssl.SSLSocket:
    """The storage SCP's side of the handshake with a connecting peer (closed on failure): a
    TlsRefused naming the peer and why."""
    sock.settimeout(timeout)
    return _handshake(
        sock,
        lambda: context.wrap_socket(sock, server_side=True),
        f"refused a TLS connection from {peer}: ",
        "local",
        "it closed the connection",
        "",
    )


def _handshake(
    sock: socket.socket, wrap: Callable[[], ssl.SSLSocket], prefix: str, side: str, closed: str, hint: str
) -> ssl.SSLSocket:
    """Run ``wrap`` (the handshake); on failure close ``sock`` and raise TlsRefused: ``prefix``,
    then why, naming the keys of ``side`` (pacs or local)."""
    try:
        return wrap()
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        msg = prefix + _their_certificate(exc, ours=side == "pacs")
        raise TlsRefused(msg) from None
    except ssl.SSLError as exc:
        sock.close()
        msg = prefix + _refusal(exc, side)
        raise TlsRefused(msg) from None
    except OSError as exc:
        sock.close()
        why = "it timed out" if isinstance(exc, TimeoutError) else closed
        msg = f"{prefix}{why} during the handshake{hint}"
        raise TlsRefused(msg) from None


def _their_certificate(exc: ssl.SSLCertVerificationError, *, ours: bool = True) -> str:
    """Why the peer's certificate was not trusted, and what to change."""
    message = (exc.verify_message or "").strip().rstrip(".")
    key = "pacs.tls" if ours else "local.tls"
    lowered = message.lower()
    if "expired" in lowered:
        return f"its certificate has expired ({message}); the peer must renew it"
    if "not yet valid" in lowered:
        return f"its certificate is not yet valid ({message}); check both machines' clocks"
    if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
        return (
            f"its certificate does not name the host we connected to ({message}); give pacs.hostname as the "
            "certificate names it, or set pacs.tls.verify_hostname: false"
        )
    if "issuer" in lowered or "self-signed" in lowered or "self signed" in lowered or "unknown ca" in lowered:
        return f"its certificate is not signed by a CA in {key}.ca_file ({message}); add that CA to {key}.ca_file"
    return f"its certificate was not accepted ({message or 'verification failed'}); check {key}.ca_file"


def _refusal(exc: ssl.SSLError, side: str) -> str:
    """Why a handshake failed other than our verification of their certificate."""
    reason = str(getattr(exc, "reason", "") or "").upper()
    key = f"{side}.tls"
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE"):
        if side == "pacs":
            return "the PACS does not speak TLS on that port (plain DICOM?); remove pacs.tls, or use its TLS port"
        return "it does not speak TLS (plain DICOM?); it must connect with DICOM TLS, as local.tls requires"
    if "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
        return f"the peer refused our certificate ({reason.lower()}); it must trust the CA of {key}.cert_file"
    if "CERTIFICATE_EXPIRED" in reason:
        return f"the peer says our certificate has expired; renew {key}.cert_file"
    if "CERTIFICATE_REQUIRED" in reason or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason:
        if side == "pacs":
            return "the PACS requires a client certificate; give pacs.tls.cert_file and pacs.tls.key_file"
        return "it showed no certificate, and local.tls.require_client_cert is true"
    if "PROTOCOL_VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason or "NO_PROTOCOLS" in reason:
        return "the peer offers no TLS version of 1.2 or newer"
    if "HANDSHAKE_FAILURE" in reason or "NO_SHARED_CIPHER" in reason:
        return "the two sides share no cipher suite (TLS 1.2 or newer)"
    return f"the handshake failed ({reason.lower() or type(exc).__name__})"
