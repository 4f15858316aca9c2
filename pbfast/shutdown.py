"""The stop's time bound: from SIGTERM/SIGINT to the process's exit in at most :data:`SHUTDOWN_TIMEOUT_SECONDS`.

:class:`StopClock` starts when the signal is handled. Each step of the stop (draining listeners, closing
tenants, joining database threads, stopping Litestream) takes at most what is left of the bound, less what the
steps after it need (:meth:`StopClock.left`). What cannot be bounded that way (a thread stuck in a C call, the
interpreter's exit joining threads) is ended by a watchdog thread: at the bound it logs and exits the process
(``os._exit``) with the status the stop would have returned. Litestream and the node's workers die with the
process (``PR_SET_PDEATHSIG``); SQLite's WAL keeps every committed write.

Thread-safety: :meth:`StopClock.start` is called once, on the event loop; :meth:`StopClock.left` may be read
from any thread (a float read).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Final

from pbfast.logs import component_logger

__all__ = ["SHUTDOWN_TIMEOUT_SECONDS", "StopClock"]

SHUTDOWN_TIMEOUT_SECONDS: Final = 4.0

log = component_logger("Server")


class StopClock:
    """The deadline of a stop that has begun (infinitely far before :meth:`start`)."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline = math.inf

    def start(self, seconds: float, exit_code: int) -> None:
        """The stop begins: it ends within ``seconds``, by itself or by the watchdog (exiting with
        ``exit_code``)."""
        self.deadline = time.monotonic() + seconds
        threading.Thread(target=self._watch, args=(seconds, exit_code), name="stop-watchdog", daemon=True).start()

    def left(self, reserve: float = 0.0) -> float:
        """Seconds until the deadline less ``reserve`` (what later steps need), never below zero."""
        return max(0.0, self.deadline - time.monotonic() - reserve)

    def _watch(self, seconds: float, exit_code: int) -> None:
        while (wait := self.deadline - time.monotonic()) > 0:
            time.sleep(wait)
        log.warning("the stop took longer than its bound of %g s: exiting now", seconds)
        logging.shutdown()  # flush the handlers: os._exit does not
        os._exit(exit_code)
