"""Connections: how long uvicorn waits for a client, and how many clients it serves at once.

uvicorn closes a connection idle between two requests (``timeout_keep_alive``) and answers 503
beyond ``limit_concurrency``, but it has no deadline for a request's head: a client that
connects and sends nothing, or half a header, held its connection (a file descriptor, a slot
under the limit) for good — 110 of them for 30 s, in issue 16's probe. ``HeadTimeoutProtocol``
adds that deadline to uvicorn's HTTP/1.1 protocol (h11, what plain ``uvicorn`` installs).
"""

from __future__ import annotations

import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head (the
    request line and headers) within ``timeout_header`` seconds of opening, or of the first
    byte of its next request.

    Args:
        timeout_header: the deadline, in seconds; the rest are ``H11Protocol``'s arguments.
    """

    def __init__(self, *args, timeout_header: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout_header = timeout_header
        self._head_deadline = None  # asyncio.TimerHandle while a request's head is awaited

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and self.conn.their_state is h11.IDLE:
            self._await_head()  # the first bytes of another request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or the connection is over)
            self._stop_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._head_deadline = self.loop.call_later(self.timeout_header, self._head_timed_out)

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.logger.debug("closing a connection that sent no request head in %s s", self.timeout_header)
            self.transport.close()


def connection_options(timeout_keep_alive: float, timeout_header: float, limit_concurrency: int) -> dict:
    """``uvicorn.Config`` (and ``uvicorn.run``) keywords for these limits.

    Args:
        timeout_keep_alive: seconds a connection may stay idle after a response.
        timeout_header: seconds a connection has to send a whole request head.
        limit_concurrency: connections served at once; a request on one more gets 503.

    Returns:
        ``http``, ``timeout_keep_alive`` and ``limit_concurrency`` keywords.
    """
    return {"http": functools.partial(HeadTimeoutProtocol, timeout_header=timeout_header),
            "timeout_keep_alive": timeout_keep_alive,
            # uvicorn answers 503 once the connections, the asking one included, reach its limit
            "limit_concurrency": limit_concurrency + 1}
