"""A TCP proxy that can freeze: it stops passing bytes on while every connection stays open, as
a network cut that drops packets looks to both ends (no reset, no answer)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.pacs_servers import free_port


class FreezingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._thawed = threading.Event()
        self._thawed.set()
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)

    def start(self) -> FreezingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def freeze(self) -> None:
        """Pass nothing on from now on (connections stay open, new ones are not answered)."""
        self._thawed.clear()

    def stop(self) -> None:
        self._stopped.set()
        self._thawed.set()
        self._server.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(client)
            self._thawed.wait()  # frozen: the connection is accepted by the kernel, never answered
            if self._stopped.is_set():
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets.append(server)
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stopped.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                self._thawed.wait()
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
