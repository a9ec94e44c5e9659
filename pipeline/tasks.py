"""Waiting, with a bound, for tasks an owner has cancelled or is closing, and saying so when it gives up.

An owner that stops its tasks waits for them to end, but not forever: a task stuck in
a C call or swallowing its cancellation must not hang a call's hang-up or a server's
shutdown. ``wait_for_tasks`` is that bounded wait; every task still running at the
deadline is logged by name, so a stuck task shows up in the log instead of vanishing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


async def wait_for_tasks(tasks: Iterable[asyncio.Task[Any]], timeout_s: float, owner: str) -> set[asyncio.Task[Any]]:
    """Wait up to ``timeout_s`` for ``tasks`` to end; log and return the ones still running.

    ``owner`` names who gave up (it goes in the log line). Cancels nothing itself: the
    caller cancels first when it means to stop them.
    """
    pending = {task for task in tasks if not task.done()}
    if not pending:
        return set()
    _done, still_running = await asyncio.wait(pending, timeout=timeout_s)
    for task in still_running:
        log.warning("%s gave up waiting for task %s after %.1f s; it is still running", owner, task.get_name(), timeout_s)
    return still_running
