"""Backpressure for `trainer serve`: one generation at a time, a bounded wait, 529 past it.

The student runs one request at a time (a backend holds one model). Requests beyond that wait
in arrival order, at most `max_waiting` of them; one more is answered at once with 529
`overloaded_error`, as the API does under load, and the SDK and Claude Code retry it with
backoff. A waiting client that disconnects leaves the queue without ever running.
"""

from __future__ import annotations

import asyncio
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
            self._queue._sem.release()


class GenerationQueue:
    def __init__(self, max_waiting: int = 16, concurrency: int = 1):
        self.max_waiting = max_waiting
        self.concurrency = concurrency
        self._sem = asyncio.Semaphore(concurrency)
        self.waiting = 0

    @property
    def busy(self) -> bool:
        return self._sem.locked()

    async def acquire(self, disconnected: Optional[Callable[[], Awaitable[bool]]] = None, poll: float = 0.25) -> Optional[Slot]:
        """A slot, or None when the client disconnected while waiting. Raises 529 when full."""
        if self._sem.locked() and self.waiting >= self.max_waiting:
            raise APIError(
                529,
                f"Overloaded: the student is busy and {self.waiting} requests are already waiting (serve.max_queue); retry later",
                "overloaded_error",
            )
        if not self._sem.locked():  # free: no waiting, no timer task (this is every request's TTFT)
            await self._sem.acquire()
            return Slot(self)
        self.waiting += 1
        try:
            while True:
                try:
                    await asyncio.wait_for(self._sem.acquire(), timeout=poll)
                    return Slot(self)
                except asyncio.TimeoutError:
                    if disconnected is not None and await disconnected():
                        return None
        finally:
            self.waiting -= 1
