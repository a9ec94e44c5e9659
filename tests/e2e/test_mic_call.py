"""``voxline mic --url``: the command-line client calls a running server's agent over WebRTC.

The server, its models and the WebRTC call are real; only PortAudio is replaced, by
``tests/stand_ins/sounddevice.py`` (a microphone playing a WAV, a speaker recording).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from tests.conftest import running_server
from tests.speech_fixtures import silence, speech
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines

pytestmark = pytest.mark.slow
STAND_INS = Path(__file__).resolve().parent.parent / "stand_ins"


def test_voxline_mic_url_asks_the_server_agent_and_plays_its_answer(
    caption_engines: CaptionEngines, agent_engines: AgentEngines, tmp_path: Path
) -> None:
    question = np.concatenate([silence(0.5), speech("How many legs does a spider have?"), silence(1.0)])
    mic_wav, speaker_wav = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    soundfile.write(mic_wav, soxr.resample(question, 16000, 48000), 48000, subtype="FLOAT")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STAND_INS), os.environ.get("PYTHONPATH", "")]),
        "VOXLINE_TEST_MIC_WAV": str(mic_wav),
        "VOXLINE_TEST_SPEAKER_WAV": str(speaker_wav),
    }
    with running_server(caption_engines, agent_engines) as ws_url:
        url = ws_url.replace("ws://", "http://")
        client = subprocess.Popen(
            [sys.executable, "-m", "voxline.cli", "mic", "--url", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        assert client.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                line = client.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if line.startswith("agent:"):
                    break
        finally:
            client.send_signal(signal.SIGINT)  # the first Ctrl-C hangs up cleanly
            out, err = client.communicate(timeout=30)
    lines.append(out)
    printed = "".join(lines)
    assert client.returncode == 0, err
    assert "you:" in printed and "spider" in printed.lower(), printed + err
    assert "agent:" in printed and "voice-to-voice" in printed
    played, rate = soundfile.read(speaker_wav, dtype="float32")
    assert rate == 48000 and np.abs(played).max() > 0.1, "the answer came out of the speaker"
