"""Backpressure for `trainer serve`: one generation at a time, a bounded wait, 529 past it.

The student runs one request at a time (a backend holds one model). Requests beyond that wait
in arrival order, at most `max_waiting` of them; one more is answered at once with 529
`overloaded_error`, as the API does under load, and the SDK and Claude Code retry it with
backoff. A waiting client that disconnects leaves the queue without ever running.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable, Optional

from trainer.serve_validate import APIError


class Slot:
    """A held turn; release() is idempotent (called by whichever of several cleanups runs first)."""

    def __init__(self, queue: "GenerationQueue"):
        self._queue = queue
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._queue._release()


class GenerationQueue:
    """A FIFO of waiting requests; a released turn is handed straight to the first waiter, so the
    count of waiters is exact at every moment (no spurious 529 right at the bound)."""

    def __init__(self, max_waiting: int = 16, concurrency: int = 1):
        self.max_waiting = max_waiting
        self._free = concurrency
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> bool:
        return self._free == 0

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the turn passes to it directly
                return
        self._free += 1

    async def acquire(self, disconnected: Optional[Callable[[], Awaitable[bool]]] = None, poll: float = 0.25) -> Optional[Slot]:
        """A slot, or None when the client disconnected while waiting. Raises 529 when full."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return Slot(self)
        if len(self._waiters) >= self.max_waiting:
            raise APIError(
                529,
                f"Overloaded: the student is busy and {len(self._waiters)} requests are already waiting "
                "(serve.max_queue); retry later",
                "overloaded_error",
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=poll)
                if done:
                    return Slot(self)
                if disconnected is not None and await disconnected():
                    break
        except BaseException:
            self._abandon(waiter)
            raise
        self._abandon(waiter)
        return None

    def _abandon(self, waiter: asyncio.Future) -> None:
        if waiter.done() and not waiter.cancelled():
            self._release()  # it was handed the turn but will not use it: pass it on
        else:
            waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
