"""How `auditlog serve` runs under uvicorn: its options and graceful shutdown.

On SIGTERM uvicorn stops accepting connections, lets every request in flight
finish (an ingest batch answers 202 as usual), closes idle connections, then
runs the app's lifespan shutdown (stream workers hand back their leases). The
websockets are closed first, with 1001 (going away) rather than uvicorn's 1012
(service restart): the client reconnects, to this process once it is back or to
another, and resumes its subscriptions from their last cursors with no gap.
Requests still running after the grace period (`serve --shutdown-grace`, 6 s)
are cancelled, so the process exits within 10 s whatever its clients do.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

GOING_AWAY = 1001
GOING_AWAY_REASON = "server shutting down; reconnect and resume from your cursor"


class GoingAwayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, closing with 1001 when the server shuts down."""

    def shutdown(self) -> None:
        if self.close_sent or not self.handshake_complete or self.initial_response is not None:
            super().shutdown()  # closing already, or not a websocket yet: uvicorn's way
            return
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
        self.conn.send_close(GOING_AWAY, GOING_AWAY_REASON)
        self.close_sent = True
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()


def uvicorn_options(
    host: str, port: int, log_level: str, *, ws_deflate: bool, shutdown_grace: float
) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "ws": GoingAwayWebSocketProtocol,
        # Compression is per connection: with it on, every live tail event is
        # deflated once per subscriber (a quarter of the server's CPU with 1,000
        # subscribers, docs/benchmarks.md). Off unless asked for.
        "ws_per_message_deflate": ws_deflate,
        "timeout_graceful_shutdown": shutdown_grace,
    }
