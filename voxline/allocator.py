"""glibc malloc settings for a long-running server: few arenas, free memory given back.

A voxline node runs many native threads (the ASR, TTS and LLM runtimes' pools, aiortc's
codec threads per call). glibc gives threads their own malloc arenas (up to eight per
core) and keeps what is freed in them for reuse, so audio buffers freed by one call's
threads stay resident while the next call's threads allocate elsewhere: resident
memory climbs in steps for the first half hour of load (measured by ``bench/soak.py``)
though nothing leaks. Two remedies, both no-ops where the C library is not glibc:

- ``limit_arenas``: at most ``count`` arenas (``mallopt(M_ARENA_MAX)``), set before the
  engines start their threads.
- ``release_free_memory``: ``malloc_trim(0)``, which hands whole free pages of every
  arena back to the kernel. It walks the arenas under their locks, so it runs off the
  event loop (``asyncio.to_thread``), after sessions end rather than on a timer alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

M_ARENA_MAX = -8


@functools.cache
def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at ``count`` (0: leave glibc's default); whether it took effect."""
    libc = _glibc()
    if count <= 0 or libc is None:
        return False
    done = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(count)))
    if not done:
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; glibc keeps its default arenas", count)
    return done


def release_free_memory() -> bool:
    """Give the free pages of every malloc arena back to the kernel; whether any were (False off glibc)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(ctypes.c_size_t(0)))


def resident_mb() -> float:
    """This process's resident memory now (MB; 0.0 where ``/proc`` is not there)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class LoadGrowth:
    """What each loading step adds to resident memory: ``took(name)`` records the growth since the last step."""

    def __init__(self) -> None:
        self.mb: dict[str, float] = {}
        self._last = resident_mb()

    def took(self, name: str) -> None:
        """Record, under ``name``, what the process grew by since the last step (or since this was made)."""
        now = resident_mb()
        self.mb[name] = round(now - self._last, 1)
        self._last = now
