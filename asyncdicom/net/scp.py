"""The storage SCP for C-MOVE: pynetdicom's server, writing received bytes straight to the spool.

The data set is never decoded here: pynetdicom streams each fragment to a file on the output
volume (``STORE_RECV_CHUNKED_DATASET``, so memory stays flat however large the instance),
and the handler makes that file durable and hands it on.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.dimse_primitives import C_STORE

from asyncdicom.net.scu import set_nodelay
from asyncdicom.write.spool import adopt

log = logging.getLogger("asyncdicom.scp")

_config.STORE_RECV_CHUNKED_DATASET = True
_config.UNRESTRICTED_STORAGE_SERVICE = True

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_NOT_REQUESTED = 0xC000


@dataclass(frozen=True, slots=True)
class Received:
    """A C-STORE made durable in the spool, with what identifies its origin."""

    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    calling_ae: str
    move_message_id: int | None
    size: int


class StorageSCP:
    """Accepts C-STOREs from the allowed AE titles; ``on_received`` returns the status to answer."""

    def __init__(
        self,
        *,
        ae_title: str,
        port: int,
        allowed_aets: Sequence[str],
        max_associations: int,
        spool: Path,
        on_received: Callable[[Received], int],
        host: str = "",
    ) -> None:
        self.ae_title = ae_title
        self.port = port
        self.host = host
        self.allowed_aets = list(allowed_aets)
        self.max_associations = max_associations
        self.spool = spool
        self.on_received = on_received
        self._server: Any = None

    def start(self) -> int:
        """Listen (port 0 picks a free one) and return the port."""
        self.spool.mkdir(parents=True, exist_ok=True)
        # pynetdicom's chunked receive files go to tempfile's folder: keep them on the output volume
        tempfile.tempdir = str(self.spool)
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.maximum_pdu_size = 0
        ae.require_calling_aet = self.allowed_aets
        ae.network_timeout = 120
        ae.dimse_timeout = 120
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, self._on_open)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=cast(Any, handlers))
        except OSError as exc:
            msg = f"Unable to listen on port {self.port} (local.port) as {exc.strerror}; choose another port"
            raise OSError(msg) from None
        self.port = int(self._server.server_address[1])
        return self.port

    def stop(self) -> None:
        """Stop listening and abort any association still open."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        tempfile.tempdir = None

    @staticmethod
    def _on_open(event: evt.Event) -> None:
        transport = event.assoc.dul.socket
        if transport is not None:
            set_nodelay(transport.socket)

    def _on_store(self, event: evt.Event) -> int | Dataset:
        request = cast(C_STORE, event.request)
        try:
            path = adopt(self.spool, Path(event.dataset_path))
        except OSError as exc:
            log.error("unable to keep a received instance as %s", exc.strerror)
            return STATUS_OUT_OF_RESOURCES
        received = Received(
            path=path,
            sop_class=str(request.AffectedSOPClassUID),
            sop_instance=str(request.AffectedSOPInstanceUID),
            transfer_syntax=str(event.context.transfer_syntax),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            move_message_id=request.MoveOriginatorMessageID,
            size=path.stat().st_size,
        )
        return self.on_received(received)
