"""The device-free parts of ``voxline mic`` and ``voxline demo``: buffers, sources, plot, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from voxline.clients.agent_mic import MicSource, SampleRing, open_devices
from voxline.clients.agent_runner import TurnTakingUser
from voxline.clients.waterfall_plot import plot_waterfall
from voxline.errors import VoxlineError
from voxline.testing.scripted_users import AudioClip


def test_sample_ring_gives_exact_frames_and_silence_on_underrun() -> None:
    ring = SampleRing(16000, max_s=0.1)
    ring.write(np.arange(1, 501, dtype=np.float32))
    first = ring.read(320)
    assert np.array_equal(first, np.arange(1, 321, dtype=np.float32))
    second = ring.read(320)
    assert np.array_equal(second[:180], np.arange(321, 501, dtype=np.float32)) and not second[180:].any()
    assert ring.underruns == 1 and len(ring) == 0


def test_sample_ring_bounds_latency_by_dropping_the_oldest() -> None:
    ring = SampleRing(16000, max_s=0.1)  # 1600 samples
    ring.write(np.arange(4000, dtype=np.float32))
    assert len(ring) == 1600 and ring.dropped == 2400
    assert ring.read(1)[0] == 2400


def test_sample_ring_is_safe_across_threads() -> None:
    ring = SampleRing(16000, max_s=10)
    chunks = [np.full(160, i, dtype=np.float32) for i in range(200)]

    def writer() -> None:
        for chunk in chunks:
            ring.write(chunk)

    thread = threading.Thread(target=writer)
    thread.start()
    got = []
    while thread.is_alive() or len(ring):
        got.append(ring.read(min(160, len(ring))) if len(ring) else np.zeros(0, np.float32))
    thread.join()
    assert np.array_equal(np.concatenate(got), np.concatenate(chunks))


def test_mic_source_reads_one_frame_per_tick() -> None:
    ring = SampleRing(16000)
    ring.write(np.ones(640, np.float32))
    source = MicSource(ring)
    assert source(320, None).sum() == 320  # type: ignore[arg-type]
    assert len(ring) == 320


def test_audio_clip_and_turn_taking_user_pad_with_silence() -> None:
    clip = AudioClip(np.ones(500, np.float32))
    assert clip(320, None).sum() == 320 and not clip.done  # type: ignore[arg-type]
    assert clip(320, None).sum() == 180 and clip.done  # type: ignore[arg-type]
    user = TurnTakingUser([np.ones(320, np.float32)])
    assert not user.done


# A stand-in for sounddevice on a machine without PortAudio (what its import raises there).
NO_PORTAUDIO = "raise OSError('PortAudio library not found')\n"


def test_open_devices_without_portaudio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "sounddevice.py").write_text(NO_PORTAUDIO)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    with pytest.raises(VoxlineError, match="PortAudio"):
        open_devices(SampleRing(16000), SampleRing(22050), 22050, 20)


@pytest.mark.parametrize("args", [["mic"], ["mic", "--url", "http://127.0.0.1:9"]], ids=["local", "url"])
def test_voxline_mic_without_portaudio_exits_with_a_clear_message_before_loading_models(
    tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "sounddevice.py").write_text(NO_PORTAUDIO)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "voxline.cli", *args], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, check=False, env=env,
    )
    assert done.returncode == 2
    assert "voxline:" in done.stderr and "PortAudio" in done.stderr
    assert "llama_context" not in done.stderr  # it failed before loading the LLM (or calling)


def test_waterfall_png_has_one_row_per_turn(tmp_path: Path) -> None:
    turns = [
        {"reply": 1, "v2v_ms": 380.0, "breakdown_ms": {"asr_final": 100, "endpoint": 8, "llm_first_token": 40, "tts_first_audio": 130, "audio_out": 9}},
        {"reply": 2, "v2v_ms": 420.0, "breakdown_ms": {"asr_final": 120, "endpoint": 5, "llm_first_token": 45, "tts_first_audio": 150, "audio_out": 10}},
    ]
    path = plot_waterfall(turns, tmp_path / "w.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
