"""The voice changer's command-line entry points: ``voxline vc`` and ``voxline mic --mode vc``.

The models, the server and the WebRTC call are real; only PortAudio is replaced for
``mic``, by ``tests/stand_ins/sounddevice.py`` (a microphone playing a WAV, a speaker
recording one). Input is a human recording from the ``real`` set.
"""

from __future__ import annotations

import json
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
from tests.speech_fixtures import silence, word_errors
from tests.test_neural_vc import DelayLine, export
from voxline.models.pitch import measure_f0
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from real_speech import real_clip

pytestmark = pytest.mark.slow
STAND_INS = Path(__file__).resolve().parent.parent / "stand_ins"
DEEPER = 2 ** (-4 / 12)


def voxline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxline.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def f0_ratio(before: np.ndarray, after: np.ndarray, rate: int, *, align: bool = False) -> float:
    """Median F0 ratio after/before over frames voiced in both (``after`` shifted to line up if ``align``)."""
    f_in, f_out = measure_f0(before, rate), measure_f0(after, rate)
    lag = 0
    if align:
        sent, back = (f_in > 0).astype(float), (f_out > 0).astype(float)
        lag = max(range(max(1, len(back) - len(sent) + 1)), key=lambda k: float(np.dot(sent, back[k : k + len(sent)])))
    f_out = f_out[lag : lag + len(f_in)]
    both = (f_in[: len(f_out)] > 0) & (f_out > 0)
    assert both.sum() > 20, "too little voiced audio"
    return float(np.median(f_out[both] / f_in[: len(f_out)][both]))


def test_voxline_vc_converts_a_file_keeping_its_length_and_rate(tmp_path: Path) -> None:
    clip = real_clip("austen_0880")
    source = tmp_path / "in.wav"
    audio_22k = soxr.resample(clip.audio, 16000, 22050).astype(np.float32)
    soundfile.write(source, audio_22k, 22050, subtype="PCM_16")
    done = voxline("vc", str(source), str(tmp_path / "out.flac"), "--preset", "deeper")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    out, rate = soundfile.read(tmp_path / "out.flac", dtype="float32")
    assert rate == 22050 and len(out) == len(audio_22k) == round(summary["duration_s"] * 22050)
    assert summary["algorithmic_latency_ms"] == 20.0 and summary["voice"]["semitones"] == -4.0
    assert abs(f0_ratio(audio_22k, out, 22050) / DEEPER - 1) < 0.03


def test_voxline_vc_refuses_bad_input_clearly(tmp_path: Path) -> None:
    done = voxline("vc", str(tmp_path / "missing.wav"), str(tmp_path / "out.wav"))
    assert done.returncode == 2 and "no such file" in done.stderr
    soundfile.write(tmp_path / "in.wav", silence(0.5), 16000)
    done = voxline("vc", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--semitones", "40")
    assert done.returncode == 2 and "semitones must be between -12 and 12" in done.stderr
    assert not (tmp_path / "out.wav").exists()


def test_voxline_vc_runs_a_users_model_sample_aligned(tmp_path: Path) -> None:
    model = export(DelayLine(), tmp_path / "delay.pt2", state_size=50, latency=50)
    audio = real_clip("arctic_a0009").audio
    soundfile.write(tmp_path / "in.wav", audio, 16000, subtype="FLOAT")
    done = voxline("vc", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--model", str(model))
    assert done.returncode == 0, done.stderr
    out, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(out, np.clip(audio, -1, 1))


def run_mic(args: list[str], mic_audio: np.ndarray, mic_rate: int, tmp_path: Path, listen_s: float) -> tuple[str, np.ndarray, int]:
    """``voxline mic ARGS`` with the stand-in devices; what it printed and what its speaker played."""
    mic_wav, speaker_wav = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    soundfile.write(mic_wav, mic_audio, mic_rate, subtype="FLOAT")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(STAND_INS), os.environ.get("PYTHONPATH", "")]),
        "VOXLINE_TEST_MIC_WAV": str(mic_wav),
        "VOXLINE_TEST_SPEAKER_WAV": str(speaker_wav),
    }
    client = subprocess.Popen([sys.executable, "-m", "voxline.cli", "mic", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert client.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the devices open once the session is up
        line = client.stderr.readline()
        if not line or "Ctrl-C" in line:
            break
    time.sleep(listen_s)
    client.send_signal(signal.SIGINT)
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    played, rate = soundfile.read(speaker_wav, dtype="float32")
    return out, played, rate


def test_voxline_mic_mode_vc_plays_the_microphone_back_in_the_voice_asked_for(tmp_path: Path) -> None:
    clip = real_clip("arctic_a0009")
    mic = soxr.resample(np.concatenate([silence(0.3), clip.audio]), 16000, 24000).astype(np.float32)
    printed, played, rate = run_mic(["--mode", "vc", "--preset", "deeper"], mic, 24000, tmp_path, listen_s=4.5)
    assert rate == 24000 and "voice: semitones -4.0" in printed
    assert abs(f0_ratio(mic, played, 24000, align=True) / DEEPER - 1) < 0.03


def test_voxline_mic_mode_anon_re_speaks_the_microphone_in_pipers_voice(tmp_path: Path) -> None:
    clip = real_clip("arctic_a0009")
    mic = np.concatenate([silence(0.3), clip.audio, silence(0.5)])
    printed, played, rate = run_mic(["--mode", "anon"], mic, 16000, tmp_path, listen_s=8.0)
    spoken = [line for line in printed.splitlines() if line.startswith("re-spoken (")]
    assert spoken and word_errors(clip.text, spoken[0].split("): ", 1)[1]) <= 2, printed
    assert rate == 22050 and np.abs(played).max() > 0.1, "Piper's voice came out of the speaker"


def test_voxline_mic_url_mode_vc_changes_the_voice_on_the_server(
    caption_engines: CaptionEngines, agent_engines: AgentEngines, tmp_path: Path
) -> None:
    clip = real_clip("arctic_a0009")
    mic = soxr.resample(np.concatenate([silence(0.3), clip.audio]), 16000, 48000).astype(np.float32)
    with running_server(caption_engines, agent_engines) as ws_url:
        url = ws_url.replace("ws://", "http://")
        printed, played, rate = run_mic(["--url", url, "--mode", "vc", "--semitones", "3", "--formant", "1.0"],
                                        mic, 48000, tmp_path, listen_s=5.0)
    assert rate == 48000 and "voice: semitones 3.0" in printed
    assert abs(f0_ratio(mic, played, 48000, align=True) / 2 ** (3 / 12) - 1) < 0.03
