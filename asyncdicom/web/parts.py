"""A multipart/related body read as it streams: the only module that imports python-multipart.

Each part's headers and data go to a :class:`PartHandler` as they arrive; nothing of a part is
held in memory here. Headers are bounded (count and size) by the parser."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser

from asyncdicom.errors import HttpRefused

MAX_HEADERS = 16  # headers of one part
MAX_HEADER_SIZE = 8192  # bytes of one part header


class PartHandler(Protocol):
    def begin_part(self, content_type: str) -> None: ...

    def data(self, chunk: memoryview) -> None: ...

    def end_part(self) -> None: ...


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/related`` Content-Type, or None when it is not one."""
    message = EmailMessage()
    message["Content-Type"] = content_type[:4096]
    if message.get_content_type() != "multipart/related":
        return None
    boundary = message.get_param("boundary")
    return boundary if isinstance(boundary, str) and 0 < len(boundary) <= 200 else None


class MultipartStream:
    """Feed a multipart/related body chunk by chunk (:meth:`feed`), then :meth:`finish`."""

    def __init__(self, boundary: str, handler: PartHandler, where: str) -> None:
        self._handler = handler
        self._where = where
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._open = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
            max_header_count=MAX_HEADERS,
            max_header_size=MAX_HEADER_SIZE,
        )

    @property
    def in_part(self) -> bool:
        """A part was begun and not ended (the body was cut inside it)."""
        return self._open

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except ParseError:
            msg = f"{self._where} answered a multipart body that cannot be read"
            raise HttpRefused(msg) from None

    def finish(self) -> None:
        try:
            self._parser.finalize()
        except ParseError:
            msg = f"{self._where} answered a multipart body that cannot be read"
            raise HttpRefused(msg) from None

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        self._open = True
        self._handler.begin_part(self._headers.get("content-type", ""))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._handler.data(memoryview(data)[start:end])

    def _part_end(self) -> None:
        self._open = False
        self._handler.end_part()
