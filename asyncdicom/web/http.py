"""The HTTP client of a DICOMweb source: the only module that imports httpx.

Every httpx exception and every unwelcome status becomes one of ours here (:mod:`asyncdicom.errors`):
401/403 :class:`AccessDenied` (after one fresh token, where a command gives them), 429/503
:class:`ServerBusy` with its Retry-After, 5xx :class:`ServerError`, other 4xx :class:`HttpRefused`,
connection problems :class:`ConnectionFailed`, timeouts :class:`SilentPeer`. Bodies are read with a
bound, checked against Content-Length before anything is read. Messages name the URL, never a
secret or a query's values.
"""

from __future__ import annotations

import email.utils
import json
import logging
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from asyncdicom import __version__
from asyncdicom.errors import (
    AccessDenied,
    ConnectionFailed,
    HostNotFound,
    HttpRefused,
    ServerBusy,
    ServerError,
    SilentPeer,
)
from asyncdicom.web.auth import Credentials

# httpx logs every request's URL, query included (patient IDs, names) at INFO: never let it
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

MAX_JSON = 64 * 1024 * 1024  # bytes of one QIDO-RS page
MAX_RETRY_AFTER = 3600.0  # seconds: a longer Retry-After is taken as this

Params = Sequence[tuple[str, str]]


class HttpSource:
    """One DICOMweb base URL, over a connection pool of its own; used by one thread at a time."""

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        ca_file: Path | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": f"asyncdicom/{__version__}"},
            trust_env=False,
        )

    def get_json(self, path: str, params: Params = ()) -> list[dict[str, Any]]:
        """GET ``path`` (below the base URL) as DICOM JSON: the list of data sets (204: none)."""
        return self.get_page(path, params)[0]

    def get_page(self, path: str, params: Params = ()) -> tuple[list[dict[str, Any]], bool]:
        """:meth:`get_json`, and whether the server says it left results out: a ``Warning: 299``
        header (PS3.18 8.3.4.3), sent by a server whose page is smaller than the limit asked."""
        response = self._get(path, params, "application/dicom+json")
        try:
            body = _read(response, MAX_JSON, self._where(path))
        finally:
            response.close()
        more = any(value.strip().startswith("299") for value in response.headers.get_list("Warning"))
        return self._data_sets(body, response.status_code, path), more

    def _data_sets(self, body: bytes, status: int, path: str) -> list[dict[str, Any]]:
        if status == 204 or not body.strip():
            return []
        try:
            found = json.loads(body)
        except ValueError:
            msg = f"{self._where(path)} answered with a body that is not JSON"
            raise HttpRefused(msg) from None
        if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
            msg = f"{self._where(path)} answered JSON that is not a list of data sets"
            raise HttpRefused(msg)
        return found

    @contextmanager
    def stream(self, path: str, accept: str) -> Iterator[tuple[str, Iterator[bytes]]]:
        """GET ``path``: its Content-Type and its body, chunk by chunk as it arrives (a read that
        keeps streaming is not cut; one silent for request.timeout is)."""
        response = self._get(path, (), accept)
        try:
            yield response.headers.get("Content-Type", ""), _chunks(response, self._where(path))
        finally:
            response.close()

    def close(self) -> None:
        self._client.close()

    def _where(self, path: str) -> str:
        return f"{self.base_url}/{path}" if path else self.base_url

    def _get(self, path: str, params: Params, accept: str) -> httpx.Response:
        """A response with a 2xx status, its body not read yet; every other outcome raised as ours."""
        refreshed = False
        while True:
            headers = {"Accept": accept}
            if self._credentials is not None:
                headers["Authorization"] = self._credentials.header()
            request = self._client.build_request("GET", self._where(path), params=list(params), headers=headers)
            response = self._send(request, path)
            if response.status_code == 401 and not refreshed and self._credentials and self._credentials.refresh():
                response.close()
                refreshed = True  # the token may have expired: one more try with a fresh one
                continue
            if response.is_success:
                return response
            response.close()
            raise _status_error(response, self._where(path), self._credentials)

    def _send(self, request: httpx.Request, path: str) -> httpx.Response:
        where = self._where(path)
        try:
            return self._client.send(request, stream=True)
        except httpx.ConnectTimeout:
            msg = f"Unable to connect to {where}: no answer within the connect timeout; check pacs.url and the network"
            raise ConnectionFailed(msg) from None
        except httpx.ConnectError as exc:
            text = str(exc)
            if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
                msg = f"Unable to connect to {where} as its host name does not resolve; check pacs.url"
                raise HostNotFound(msg) from None
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
                msg = f"Unable to connect to {where}: its certificate is not trusted; give pacs.ca_file"
                raise ConnectionFailed(msg) from None
            msg = (
                f"Unable to connect to {where} (connection refused or reset); check pacs.url, and that the server runs"
            )
            raise ConnectionFailed(msg) from None
        except httpx.TimeoutException:
            msg = f"{where} sent nothing within request.timeout"
            raise SilentPeer(msg) from None
        except httpx.HTTPError as exc:
            msg = f"{where}: the connection broke ({type(exc).__name__})"
            raise ServerError(msg) from None


def _chunks(response: httpx.Response, where: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()  # as the socket gives them: no re-chunking copies
    except httpx.TimeoutException:
        msg = f"{where} stopped sending within request.timeout"
        raise SilentPeer(msg) from None
    except httpx.HTTPError as exc:
        msg = f"{where}: the response was cut short ({type(exc).__name__})"
        raise ServerError(msg) from None


def _read(response: httpx.Response, limit: int, where: str) -> bytes:
    """The body, refusing one longer than ``limit`` (by its Content-Length first)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        msg = f"{where} announced a body of {int(declared)} bytes, more than the {limit} one page may hold"
        raise HttpRefused(msg)
    chunks: list[bytes] = []
    size = 0
    for chunk in _chunks(response, where):
        size += len(chunk)
        if size > limit:
            msg = f"{where} sent a body of more than the {limit} bytes one page may hold"
            raise HttpRefused(msg)
        chunks.append(chunk)
    return b"".join(chunks)


def _status_error(response: httpx.Response, where: str, credentials: Credentials | None) -> Exception:
    status = response.status_code
    if status in (401, 403):
        if credentials is None:
            advice = "the server wants credentials: give pacs.auth"
        elif status == 401:
            advice = "the credentials were refused (an expired token, a wrong password): renew them"
        else:
            advice = "the credentials lack the permission (a missing scope or role): ask for it"
        return AccessDenied(f"{where} answered {status}: {advice}")
    if status in (429, 503):
        after = retry_after(response.headers.get("Retry-After", ""))
        wait = f"; it asks to wait {after:.0f} s" if after is not None else ""
        return ServerBusy(f"{where} answered {status} (busy){wait}", after)
    if status >= 500:
        return ServerError(f"{where} answered {status} (server error)")
    return HttpRefused(f"{where} answered {status} ({response.reason_phrase or 'refused'})", status)


def retry_after(value: str, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (a number, or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`; None when it says nothing readable."""
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)
