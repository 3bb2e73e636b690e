"""Ctrl-C at a safe point: the first SIGINT is remembered and acted on between two steps of a loop.

A ``KeyboardInterrupt`` raised in the middle of a training step leaves the state half-advanced (a batch
drawn from the sampler's RNG, an optimizer step half applied), so a resume from it cannot equal the
uninterrupted run. :func:`deferred_sigint` turns the first Ctrl-C into a flag the loop polls at its step
boundary; a second Ctrl-C aborts at once (the loop then keeps its last state saved at a boundary).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def deferred_sigint(
    message: str = "stopping after this step and saving (Ctrl-C again to abort)",
) -> Iterator[list[bool]]:
    """Yield a one-element list that becomes ``[True]`` on the first Ctrl-C; the second raises at once.

    Outside the main thread (where signal handlers cannot be set) the flag never changes and Ctrl-C raises
    ``KeyboardInterrupt`` as usual.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        print(f"\n{message}", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
