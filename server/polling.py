"""A daemon thread that polls the database for work: the export and the subscription workers.

Each host runs one per process; work is claimed in the database (a lease), so any number of
them may run at once. The loop runs `run_once` until it finds nothing, then waits `poll_seconds`
(or until `wake`); every `housekeeping_seconds` it first does `housekeeping` (expired files,
old events). A failed poll (the database away for a moment) is logged and polled again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from server import memory

log = logging.getLogger("rehabfhir.workers")


class PollingWorker:
    """Start, wake and stop a polling thread; subclasses say what one unit of work is."""

    thread_name = "rehabfhir-worker"
    join_on_stop = False  # wait for the current unit of work when stopping

    def __init__(self) -> None:
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def poll_seconds(self) -> float:
        """How long to wait between polls that found nothing."""
        raise NotImplementedError

    @property
    def housekeeping_seconds(self) -> float:
        """How often to run housekeeping."""
        raise NotImplementedError

    def run_once(self) -> bool:
        """Claim and do one unit of work; return whether there was one."""
        raise NotImplementedError

    def housekeeping(self) -> object:
        """Periodic cleanup between polls (nothing by default)."""
        return None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()

    def alive(self) -> bool:
        """Return whether the thread is running (False when never started or stopped)."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Ask the thread to finish after its current unit of work (and wait, if join_on_stop)."""
        self._stop.set()
        self._wake.set()
        if self.join_on_stop and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _loop(self) -> None:
        last_housekeeping = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_housekeeping >= self.housekeeping_seconds:
                    last_housekeeping = time.monotonic()
                    self.housekeeping()
                worked = False
                while not self._stop.is_set() and self.run_once():
                    worked = True
                if worked:
                    memory.trim()  # an export job's buffers back to the system, not kept per arena
            except Exception as exc:  # the database may be away for a moment: keep polling
                log.warning("%s %s: poll failed: %s", self.thread_name, self.id, exc)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
