"""A header timeout for the review server: uvicorn closes an idle keep-alive connection, but a client that sends
its request headers a byte at a time (or never finishes them) holds a connection as long as it likes. The
protocol here closes a connection whose request headers are not complete ``seconds`` after it opened, or after
its previous response was sent."""

from __future__ import annotations

HEADER_TIMEOUT = 10.0  # seconds a client has to send a request's headers


def header_timeout_protocol(seconds: float = HEADER_TIMEOUT):
    """uvicorn's h11 protocol class with the header timeout (pass it as ``uvicorn.run(..., http=...)``)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeout(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:  # a request's headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeout
