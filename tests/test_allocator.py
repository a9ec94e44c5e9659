"""The allocator settings a node applies: memory freed by sessions goes back to the kernel."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import psutil
from voxline.allocator import limit_arenas, release_free_memory
process = psutil.Process()
assert limit_arenas(2)
blocks = [bytes(2048) for _ in range(100_000)]  # 200 MB in malloc'd blocks (over pymalloc's 512 B)
kept = blocks[::50]  # one in fifty stays: the heap cannot shrink from its top alone
del blocks
freed_mb = process.memory_info().rss >> 20
released = release_free_memory()
print(freed_mb, process.memory_info().rss >> 20, released)
"""


def test_free_memory_is_handed_back_to_the_kernel() -> None:
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=True)
    before_mb, after_mb, released = result.stdout.split()
    assert released == "True"
    assert int(before_mb) > 150 and int(after_mb) < int(before_mb) - 120, (before_mb, after_mb)
