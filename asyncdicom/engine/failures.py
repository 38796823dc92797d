"""Every kind of failure: what it means, what asyncdicom does about it, and what the user should do.

One table, used for the messages of failed requests and printed in docs/troubleshooting.md (a
test keeps the two the same). The actions are the retry policy's (:mod:`.retry`).
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncdicom.errors import (
    AccessDenied,
    AssociationRejected,
    ConnectionFailed,
    HttpRefused,
    NetworkError,
    ProtocolError,
    ServiceNotSupported,
    SilentPeer,
    TlsRefused,
)


@dataclass(frozen=True, slots=True)
class Failure:
    """One row of the table."""

    kind: str  # what happened, as the docs name it
    action: str  # what asyncdicom does
    advice: str  # what the user should do


BUSY = Failure(
    "association refused, transient (PACS busy)",
    "slow down: hold one association fewer, wait, try again",
    "nothing; if it lasts, lower request.threads",
)
REFUSED = Failure(
    "association refused, permanent",
    "stop the run (exit 1)",
    "fix what the message names: pacs.aet, or register local.aet on the PACS",
)
ABORTED = Failure(
    "association aborted or connection reset",
    "retry with jittered back-off, at most request.retries times; a plain rerun continues it",
    "nothing; if frequent, lower request.threads",
)
BROKEN = Failure(
    "protocol error (the PACS broke the DICOM protocol)",
    "fail the request now",
    "report it to the PACS vendor; the log names the PDU",
)
UNREACHABLE = Failure(
    "PACS unreachable (connection refused, no route, DNS)",
    "reconnect with back-off; stop the run after request.unreachable_timeout (exit 1)",
    "check pacs.hostname and pacs.port with asyncdicom echo; run again",
)
SILENT = Failure(
    "DIMSE timeout (no response, or for a retrieve no response and no instance)",
    "abort the association, retry at once (only what is missing); a plain rerun continues it",
    "if the PACS is just slow, raise request.timeout (C-FIND) or request.idle_timeout (retrieves)",
)
UNSUPPORTED = Failure(
    "service not supported (the PACS refused the query/retrieve model)",
    "stop the run (exit 1)",
    "try another request.model (patient or study)",
)
OUT_OF_RESOURCES = Failure(
    "0xA700-0xA7FF out of resources",
    "retry with longer jittered back-off; a plain rerun continues it",
    "lower request.threads or set request.max_rate",
)
UNKNOWN_DESTINATION = Failure(
    "0xA801 move destination unknown",
    "stop the run (exit 1)",
    "register local.aet with this host and local.port on the PACS; check with asyncdicom echo --move",
)
WRONG_IDENTIFIER = Failure(
    "0xA900-0xA9FF identifier does not match the SOP class",
    "fail the request now",
    "check request.model and the elements' QueryRetrieveLevel",
)
UNABLE = Failure(
    "0xC000-0xCFFF unable to process",
    "fail the request now",
    "check the request's keys; for C-MOVE check the way back with asyncdicom echo --move; for C-GET "
    "see request.sop_classes",
)
CANCELLED = Failure(
    "0xFE00 cancelled",
    "fail the request; a plain rerun continues it",
    "nothing",
)
SUB_OPERATIONS = Failure(
    "0xB000 or 0x0000 with failed sub-operations",
    "retry for the failed instances, at most request.retries times, then record the request as partial",
    "run again to ask for the missing instances; the PACS log says why they failed",
)
ACCESS_DENIED = Failure(
    "DICOMweb 401 or 403 (credentials missing, refused or short of a permission)",
    "stop the run (exit 1), after one fresh token where pacs.auth.token_command gives them",
    "give or renew pacs.auth as the message says (an expired token, a missing scope)",
)
HTTP_REFUSED = Failure(
    "DICOMweb answer refused or unreadable (another 4xx, not DICOM JSON, too large, offset ignored)",
    "fail the request now",
    "the message names the URL and why; check the request's keys, or report it to the server's vendor",
)
TLS_REFUSED = Failure(
    "DICOM TLS handshake failed (certificate expired, unknown CA, host name mismatch, TLS on one side only)",
    "stop the run (exit 1)",
    "fix what the message names: pacs.tls.ca_file, cert_file and key_file, pacs.hostname, or the PACS's TLS port",
)
REFUSED_CLASS = Failure(
    "C-GET of a SOP class the PACS accepted no presentation context for",
    "record the request as partial (or failed, when nothing arrived) at once: asking again meets the same refusal",
    "use request.type c-move for these studies; the summary and the request CSV name the classes",
)

TABLE = (
    BUSY,
    REFUSED,
    ABORTED,
    BROKEN,
    UNREACHABLE,
    SILENT,
    UNSUPPORTED,
    OUT_OF_RESOURCES,
    UNKNOWN_DESTINATION,
    WRONG_IDENTIFIER,
    UNABLE,
    CANCELLED,
    SUB_OPERATIONS,
    REFUSED_CLASS,
    ACCESS_DENIED,
    HTTP_REFUSED,
    TLS_REFUSED,
)


def for_error(error: NetworkError) -> Failure:
    """The row of a network error."""
    if isinstance(error, AccessDenied):
        return ACCESS_DENIED
    if isinstance(error, TlsRefused):
        return TLS_REFUSED
    if isinstance(error, HttpRefused):
        return HTTP_REFUSED
    if isinstance(error, AssociationRejected):
        return BUSY if error.transient else REFUSED
    if isinstance(error, ConnectionFailed):
        return UNREACHABLE
    if isinstance(error, ServiceNotSupported):
        return UNSUPPORTED
    if isinstance(error, SilentPeer):
        return SILENT
    if isinstance(error, ProtocolError):
        return BROKEN
    return ABORTED  # aborted, reset, or any other network error


def for_status(status: int, failed_sub_operations: bool = False) -> Failure | None:
    """The row of a final DIMSE status (None for success without failed sub-operations)."""
    if 0xA700 <= status <= 0xA7FF:
        return OUT_OF_RESOURCES
    if status == 0xA801:
        return UNKNOWN_DESTINATION
    if 0xA900 <= status <= 0xA9FF:
        return WRONG_IDENTIFIER
    if 0xC000 <= status <= 0xCFFF:
        return UNABLE
    if status == 0xFE00:
        return CANCELLED
    if failed_sub_operations or 0xB000 <= status <= 0xBFFF:
        return SUB_OPERATIONS if failed_sub_operations else None
    return None if status in (0x0000, 0x0001, 0x0107, 0x0116) else UNABLE
