"""SampleFifo: chunks of any size in, exact frames out, bounded by dropping the oldest."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxline.sample_fifo import SampleFifo


@given(st.lists(st.integers(0, 500), max_size=20), st.integers(1, 300))
def test_reads_give_the_written_samples_in_order_then_silence(chunks: list[int], frame: int) -> None:
    fifo = SampleFifo(max_samples=10_000)  # above anything written: nothing is dropped
    written = np.arange(1, sum(chunks) + 1, dtype=np.float32)
    start = 0
    for n in chunks:
        fifo.write(written[start : start + n])
        start += n
    frames = [fifo.read(frame) for _ in range(-(-len(written) // frame) + 1)]
    out = np.concatenate(frames)
    assert np.array_equal(out[: len(written)], written)
    assert not out[len(written) :].any() and len(fifo) == 0


def test_bounded_fifo_drops_the_oldest_and_counts_them() -> None:
    fifo = SampleFifo(max_samples=100)
    fifo.write(np.arange(60, dtype=np.float32))
    fifo.write(np.arange(60, 130, dtype=np.float32))
    assert len(fifo) == 100 and fifo.dropped == 30
    assert fifo.read(1)[0] == 30
    fifo.clear()
    assert len(fifo) == 0 and not fifo.read(5).any()
    with pytest.raises(ValueError):
        SampleFifo(0)
