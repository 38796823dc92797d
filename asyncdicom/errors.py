"""Exceptions raised by asyncdicom, and the exit codes they map to.

::

    AsyncDicomError
    ├── ConfigError            # dotted key path + remedy; exit 2
    ├── PlanError              # CSV file:line + column; exit 2
    ├── LedgerError            # ledger too new, locked or corrupt; exit 1
    ├── AnonymizerInputError   # the CTP script or lookup table cannot be used; exit 2
    │   ├── ScriptError        # (asyncdicom.anonymize.script) file:line and how to fix it
    │   └── LookupTableError   # (asyncdicom.anonymize.lookup)
    ├── NetworkError           # mapped from OSError/ValueError in asyncdicom.net, from httpx in asyncdicom.web
    │   ├── ConnectionFailed   # TCP connect refused or timed out
    │   │   └── HostNotFound   # the host name does not resolve
    │   ├── AssociationRejected(result, source, reason)
    │   │   ├── ServerBusy     # DICOMweb 429 or 503, with Retry-After
    │   │   ├── AccessDenied   # DICOMweb 401 or 403
    │   │   ├── TlsRefused     # a DICOM TLS handshake failed (certificate, CA, host name, no TLS)
    │   │   └── IdentityRefused  # the PACS refused our user identity (pacs.username)
    │   ├── AssociationAborted
    │   │   ├── ProtocolError  # the peer broke the protocol (malformed or oversized PDU)
    │   │   └── ServerError    # DICOMweb 5xx, or a response cut short
    │   ├── HttpRefused        # DICOMweb 4xx otherwise
    │   ├── ServiceNotSupported  # the PACS accepted the association but not the SOP class
    │   └── SilentPeer         # no response within the adaptive deadline
    ├── OutputError            # the output volume cannot be written; exit 4
    │   └── DiskFull           # no space left (or quota exceeded)
    └── FatalRunError          # the run cannot go on (e.g. permanent rejection); exit 1

Messages never contain patient data: UIDs, AE titles, hosts and file paths only.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes: part of the command-line API."""

    OK = 0
    FATAL = 1
    USAGE = 2
    FAILED_REQUESTS = 3
    OUTPUT = 4
    OUTSIDE_WINDOW = 5
    INTERRUPTED = 130


class AsyncDicomError(Exception):
    """Base class of every error asyncdicom raises on purpose."""

    exit_code: ExitCode = ExitCode.FATAL


class ConfigError(AsyncDicomError):
    """The configuration file is invalid; the message names the key path."""

    exit_code = ExitCode.USAGE

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class PlanError(AsyncDicomError):
    """The batch CSV (or an element list) is invalid; the message names file:line."""

    exit_code = ExitCode.USAGE

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}" if where else message)


class AnonymizerInputError(AsyncDicomError):
    """An anonymization script or lookup table that cannot be used: where and why."""

    exit_code = ExitCode.USAGE


class LedgerError(AsyncDicomError):
    """The ledger database cannot be used."""


class FatalRunError(AsyncDicomError):
    """The run cannot continue; pending requests stay pending for the next run."""


class NetworkError(AsyncDicomError):
    """A network-level problem talking to the PACS.

    ``received`` counts the instances a retrieve had delivered (and stored) before it broke.
    """

    received: int = 0


class ConnectionFailed(NetworkError):
    """The TCP connection to the PACS could not be opened."""


class HostNotFound(ConnectionFailed):
    """The PACS's host name does not resolve (DNS or /etc/hosts)."""


class AssociationRejected(NetworkError):
    """The PACS rejected the association request.

    ``result`` is 1 (permanent) or 2 (transient); ``source`` and ``reason`` follow PS3.8
    Table 9-21.
    """

    def __init__(self, result: int, source: int, reason: int, message: str) -> None:
        self.result = result
        self.source = source
        self.reason = reason
        super().__init__(message)

    @property
    def transient(self) -> bool:
        """Whether trying again later can succeed (the PACS is busy, not misconfigured)."""
        if self.result == 0x02:
            return True
        # "local-limit-exceeded" and "temporary congestion" are transient whatever the result.
        return (self.source, self.reason) in {(0x03, 0x01), (0x03, 0x02), (0x02, 0x01)}


class ServerBusy(AssociationRejected):
    """A DICOMweb server answered 429 or 503: slow the run down, and wait at least
    ``retry_after`` seconds (its Retry-After header) before asking again."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(0x02, 0x03, 0x01, message)
        self.retry_after = retry_after


class AccessDenied(AssociationRejected):
    """A DICOMweb server answered 401 or 403 (a token expired or refused, a scope missing): the
    run stops, as every request would meet the same answer."""

    def __init__(self, message: str) -> None:
        super().__init__(0x01, 0x01, 0x01, message)


class TlsRefused(AssociationRejected):
    """A DICOM TLS handshake failed: an untrusted, expired or misnamed certificate on either side,
    or a peer that does not speak TLS. Asking again meets the same refusal: the run stops."""

    def __init__(self, message: str) -> None:
        super().__init__(0x01, 0x01, 0x01, message)


class IdentityRefused(AssociationRejected):
    """The PACS rejected an association carrying our user identity with no reason given: how a
    PACS refuses the identity (pynetdicom even calls it transient). Never taken for a busy PACS."""

    @property
    def transient(self) -> bool:
        return False


class AssociationAborted(NetworkError):
    """The association was aborted, or a DIMSE response never came."""


class ProtocolError(AssociationAborted):
    """The peer sent bytes that break the DICOM upper layer protocol (a malformed PDU, an
    unexpected PDU type, a PDU longer than negotiated); the association was aborted."""


class ServerError(AssociationAborted):
    """A DICOMweb server failed (5xx other than 503) or cut its response short: asked again."""


class HttpRefused(NetworkError):
    """A DICOMweb server refused a request (4xx other than 401, 403 and 429), or answered what
    cannot be read: the request fails. ``status`` is the HTTP status, if that was the reason."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ServiceNotSupported(NetworkError):
    """The PACS does not offer the service (SOP class) the request needs."""


class SilentPeer(NetworkError):
    """The PACS sent nothing for longer than the adaptive deadline; the association was aborted."""


class WindowClosed(AsyncDicomError):
    """The schedule window closed and ``schedule.outside_window`` is ``exit``: the run ends after the
    drain, leaving what is unfinished resumable."""

    exit_code = ExitCode.OUTSIDE_WINDOW


class OutputError(AsyncDicomError):
    """A file under the output directory could not be written; what was stored is recorded."""

    exit_code = ExitCode.OUTPUT


class DiskFull(OutputError):
    """The output volume is full (or the user's quota is exhausted)."""


def output_error(exc: OSError, what: str) -> OutputError:
    """The project's error for an OSError met while writing ``what`` (no patient data: a
    folder or a spool file name at most)."""

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"Unable to write {what} as the output volume is full ({exc.strerror}); free some space "
            "or choose an output.directory on a larger volume, then run again: what was stored is kept"
        )
    reason = exc.strerror or type(exc).__name__
    return OutputError(f"Unable to write {what} as {reason}; check the output directory and its permissions")


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``, exception groups flattened (``exc`` itself if not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc
