"""The voxline command line, as a user runs it: real files, real models, real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile
import soxr
from conftest import running_server
from speech_fixtures import COFFEE, FOX, silence, speech, word_errors

ROOT = Path(__file__).resolve().parents[1]


def voxline(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxline.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_caption_prints_the_words_of_the_bundled_sample() -> None:
    result = voxline("caption", "examples/hello.wav")
    assert result.returncode == 0, result.stderr
    assert word_errors("Hello and welcome to voxline. This sample shows live captions from a file. "
                       "The quick brown fox jumps over the lazy dog, and the captions keep up.",
                       result.stdout.replace("Vox Line", "voxline").replace("box line", "voxline")) <= 3


def test_a_stereo_44k_flac_and_an_mp3_are_captioned_as_jsonl(tmp_path: Path) -> None:
    mono = np.concatenate([silence(0.3), speech(FOX), silence(0.5)])
    stereo = np.stack([mono, mono * 0.5], axis=1)
    flac = tmp_path / "fox.flac"
    soundfile.write(flac, soxr.resample(stereo, 16000, 44100), 44100)
    mp3 = tmp_path / "coffee.mp3"
    import av

    with av.open(str(mp3), "w") as out:
        stream = out.add_stream("mp3", rate=22050)
        audio = soxr.resample(np.concatenate([speech(COFFEE), silence(0.5)]), 16000, 22050).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 22050
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    for path, text in ((flac, FOX), (mp3, COFFEE)):
        result = voxline("caption", str(path), "--format", "jsonl", "--no-progress")
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        finals = " ".join(e["text"] for e in events if e["type"] == "final")
        assert word_errors(text, finals) <= 1, (path.name, finals)


def test_caption_through_a_server_gives_srt(caption_engines) -> None:  # type: ignore[no-untyped-def]
    with running_server(caption_engines) as url:
        result = voxline("caption", "examples/hello.wav", "--url", url, "--format", "srt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1\n00:00:0") and "lazy dog" in result.stdout.lower()


def test_a_missing_file_is_a_one_line_error_not_a_traceback() -> None:
    result = voxline("caption", "no/such/file.wav")
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_model_is_a_clear_error() -> None:
    result = voxline("caption", "examples/hello.wav", "--model", "no-such-model")
    assert result.returncode == 2
    assert "no-such-model" in result.stderr and "Traceback" not in result.stderr
