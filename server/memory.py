"""Give freed heap back to the operating system (glibc only; elsewhere these do nothing).

A gunicorn gthread worker's threads each get their own malloc arena (up to 8 per core), and an
arena keeps what a large request (a transaction Bundle of several MB) or an export job freed, so
a worker's RSS ratchets up to the largest thing each thread ever held. `limit_arenas` caps the
arenas (glibc's M_ARENA_MAX, what MALLOC_ARENA_MAX sets, which the process reads only at its
start) and `trim` returns the free top and free pages of every arena (malloc_trim(0)). The app
calls `limit_arenas` as it starts, and `trim` after a request with a large body and after a
background worker's batch of work (bench/README.md, "Memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("rehabfhir.memory")

M_ARENA_MAX = -8  # glibc malloc.h
ARENAS = 2
BIG_BODY = 512 * 1024  # bytes: a request body this large is followed by a trim


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - musl has neither
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap the malloc arenas of threads created from now on; return whether it took effect."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, arenas) == 1)


def trim() -> bool:
    """Return free heap memory to the system; return whether any was released."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))
