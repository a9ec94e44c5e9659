"""Echo cancellation: WebRTC AEC3 on Piper speech played through a simulated room.

The agent's speech goes through ``EchoDevice`` (loudspeaker -> room -> microphone, with
the user's voice and a little noise mixed in) in 20 ms frames, the reference added as
it is played, and the real canceller cleans the microphone stream.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
from speech_fixtures import COFFEE, SAMPLE_RATE_HZ, STELLA, TRAIN, speech, white_noise, word_errors

from voxline.clients.echo_device import EchoDevice
from voxline.errors import EngineError
from voxline.models.echo import AEC_ALGORITHMIC_DELAY_SAMPLES, AEC_FRAME_SAMPLES, EchoCanceller
from voxline.pipeline.frames import AudioFrame, ControlFrame, ControlKind, Frame
from voxline.pipeline.graph import Graph
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.pipeline.stages.echo_cancel import EchoCancelStage

FRAME = 320  # 20 ms, the pipeline's frame
DELAYS_MS = [50, 120, 250]
MIN_ERLE_DB = 25.0  # measured 31.3 / 31.3 / 35.8 dB at 50 / 120 / 250 ms; the -60 dBFS noise caps it near 35
USER_AT_S = 3.5  # the user starts talking over the agent here, once the canceller has converged


@dataclass
class Conversation:
    mic: np.ndarray  # what the microphone heard
    echo: np.ndarray  # the echo part of it
    cleaned: np.ndarray  # the canceller's output, realigned by its 8 ms delay
    agent_samples: int  # the agent talks over the first this many samples


def agent_speech() -> np.ndarray:
    return np.concatenate([speech(STELLA), speech(TRAIN)])  # 6.4 s


def converse(delay_ms: int, user: np.ndarray | None = None, *, reference_late: bool = False) -> Conversation:
    """Play the agent's speech into an ``EchoDevice`` frame by frame and cancel the echo."""
    agent = agent_speech()
    n = len(agent) + SAMPLE_RATE_HZ // 2
    n += -n % FRAME
    far = np.zeros(n, dtype=np.float32)
    far[: len(agent)] = agent
    near = np.zeros(n, dtype=np.float32)
    if user is not None:
        at = round(USER_AT_S * SAMPLE_RATE_HZ)
        near[at : at + len(user)] = user
    device = EchoDevice(delay_ms=delay_ms, gain=0.5, reflections=3, noise_dbfs=-60, seed=7)
    canceller = EchoCanceller()
    mic, echo, cleaned = [], [], []
    for i in range(0, n, FRAME):
        played = far[i : i + FRAME]
        device.play(played)
        if not reference_late:
            canceller.add_reference(played)
        heard = device.capture(near[i : i + FRAME])
        cleaned.append(canceller.process(heard))
        if reference_late:  # the reference of this span arrives after its microphone audio
            canceller.add_reference(played)
        mic.append(heard)
        echo.append(device.last_echo)
    out = np.concatenate(cleaned)
    out = np.concatenate([out[AEC_ALGORITHMIC_DELAY_SAMPLES:], np.zeros(AEC_ALGORITHMIC_DELAY_SAMPLES, np.float32)])
    return Conversation(np.concatenate(mic), np.concatenate(echo), out, len(agent))


def erle_db(conv: Conversation) -> float:
    """Echo return loss enhancement (dB) over the second half of the agent's speech, once converged."""
    span = slice(conv.agent_samples // 2, conv.agent_samples)
    return float(10 * np.log10(np.sum(conv.mic[span] ** 2) / np.sum(conv.cleaned[span] ** 2)))


# -- the canceller -----------------------------------------------------------------------


@pytest.mark.parametrize("delay_ms", DELAYS_MS)
def test_the_agents_own_voice_is_removed_from_the_microphone(delay_ms: int) -> None:
    conv = converse(delay_ms)
    echo_dbfs = 10 * np.log10(np.mean(conv.echo**2))
    assert echo_dbfs > -30  # the echo is loud: the agent would hear itself without the canceller
    assert erle_db(conv) > MIN_ERLE_DB


def test_a_reference_that_arrives_20_ms_after_its_microphone_audio_is_still_cancelled() -> None:
    assert erle_db(converse(120, reference_late=True)) > MIN_ERLE_DB


@pytest.mark.parametrize("delay_ms", DELAYS_MS)
async def test_the_user_talking_over_the_agent_is_still_understood(
    delay_ms: int, caption_engines: CaptionEngines
) -> None:
    user = speech(COFFEE)
    conv = converse(delay_ms, user)
    at = round(USER_AT_S * SAMPLE_RATE_HZ)
    span = slice(at, at + len(user))
    assert np.corrcoef(conv.cleaned[span], user)[0, 1] > 0.7  # measured 0.91 / 0.88 / 0.81

    async def heard(audio: np.ndarray) -> str:
        window = audio[at - SAMPLE_RATE_HZ // 4 : at + len(user) + SAMPLE_RATE_HZ // 4]
        result = await caption_engines.recognizer.transcribe(window, final=True, deadline=time.monotonic() + 5)
        return result.text

    errors_cleaned = word_errors(COFFEE, await heard(conv.cleaned))
    errors_raw = word_errors(COFFEE, await heard(conv.mic))
    assert errors_cleaned <= 3  # of 10 words; measured 0 / 1 / 0
    assert errors_raw >= errors_cleaned + 3  # the echo alone ruins it (measured 7 / 8 / 6 errors)


def test_speech_without_any_reference_passes_through_unchanged_but_for_8_ms() -> None:
    user = speech(COFFEE)
    user = user[: len(user) - len(user) % FRAME]
    canceller = EchoCanceller()
    out = np.concatenate([canceller.process(user[i : i + FRAME]) for i in range(0, len(user), FRAME)])
    aligned = out[AEC_ALGORITHMIC_DELAY_SAMPLES:]
    assert np.corrcoef(aligned, user[: len(aligned)])[0, 1] > 0.9
    level_db = 10 * np.log10(np.sum(aligned**2) / np.sum(user**2))
    assert abs(level_db) < 1.5  # no noise suppression, no gain control by default
    assert canceller.reference_frames_used == 0


def test_microphone_audio_of_any_chunk_size_comes_back_whole_within_10_ms() -> None:
    audio = white_noise(1.0, rms=0.05)
    canceller = EchoCanceller()
    fed = returned = 0
    for i in range(0, len(audio), 333):
        chunk = audio[i : i + 333]
        out = canceller.process(chunk)
        fed += len(chunk)
        returned += len(out)
        assert len(out) % AEC_FRAME_SAMPLES == 0
        assert 0 <= fed - returned < AEC_FRAME_SAMPLES
    returned += len(canceller.flush())
    assert returned == fed == len(audio)
    assert canceller.pending_samples == 0


def test_the_reference_queue_holds_one_second_and_drops_the_oldest() -> None:
    canceller = EchoCanceller(max_reference_ms=1000)
    for _ in range(3):
        canceller.add_reference(np.ones(8000, dtype=np.float32))
    assert canceller.queued_reference_samples == SAMPLE_RATE_HZ
    assert canceller.reference_dropped_samples == 8000
    canceller.process(np.zeros(AEC_FRAME_SAMPLES * 2, dtype=np.float32))
    assert canceller.queued_reference_samples == SAMPLE_RATE_HZ - 2 * AEC_FRAME_SAMPLES
    canceller.clear_reference()
    assert canceller.queued_reference_samples == 0


def test_without_the_package_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aec_audio_processing", None)  # makes the import fail
    assert not EchoCanceller.available()
    with pytest.raises(EngineError, match="pip install aec-audio-processing"):
        EchoCanceller()


# -- the simulated device ----------------------------------------------------------------


def test_the_echo_device_returns_what_was_played_delay_ms_later_and_quieter() -> None:
    device = EchoDevice(delay_ms=50, gain=0.4, reflections=0, noise_dbfs=None)
    impulse = np.zeros(FRAME, dtype=np.float32)
    impulse[0] = 1.0
    device.play(impulse)
    mic = np.concatenate([device.capture(np.zeros(FRAME, np.float32)) for _ in range(5)])
    assert np.flatnonzero(mic).tolist() == [800]  # 50 ms at 16 kHz
    assert mic[800] == pytest.approx(0.4)


def test_the_echo_device_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> np.ndarray:
        device = EchoDevice(delay_ms=120, seed=seed)
        device.play(white_noise(0.5))
        return np.concatenate([device.capture(np.zeros(FRAME, np.float32)) for _ in range(50)])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


# -- the stage ---------------------------------------------------------------------------


async def run_stage(stage: EchoCancelStage, frames: list[Frame]) -> list[Frame]:
    graph = Graph("echo-test")
    inbox = graph.input_to(stage, maxsize=1000)
    out = graph.output_from(stage, maxsize=1000)
    await graph.start()
    for frame in frames:
        await inbox.put(frame)
    assert await graph.drain(5), graph.error
    received = []
    while (frame := out.get_nowait()) is not None:
        received.append(frame)
    return received


def audio_frames(audio: np.ndarray, sizes: list[int]) -> list[AudioFrame]:
    frames, pts = [], 0
    for i, size in enumerate(sizes):
        frames.append(AudioFrame(samples=audio[pts : pts + size], sample_rate_hz=SAMPLE_RATE_HZ,
                                 pts_samples=pts, capture_time=100.0 + i))
        pts += size
    return frames


async def test_the_stage_keeps_every_frames_pts_and_length_and_forwards_control_frames() -> None:
    audio = white_noise(0.4, rms=0.05)
    frames: list[Frame] = list(audio_frames(audio, [FRAME] * 20))
    stop = ControlFrame(kind=ControlKind.SPEECH_STOP, media_time_s=0.2)
    frames.insert(10, stop)
    stage = EchoCancelStage(EchoCanceller())
    received = await run_stage(stage, frames)

    assert received[10] == stop
    assert isinstance(received[-1], ControlFrame) and received[-1].kind is ControlKind.END_OF_STREAM
    sent_audio = [f for f in frames if isinstance(f, AudioFrame)]
    got_audio = [f for f in received if isinstance(f, AudioFrame)]
    assert [(f.pts_samples, len(f.samples), f.capture_time) for f in got_audio] == [
        (f.pts_samples, len(f.samples), f.capture_time) for f in sent_audio
    ]
    assert stage.latency_samples == 0
    expected = EchoCanceller().process(audio)  # the same canceller fed at once
    np.testing.assert_array_equal(np.concatenate([f.samples for f in got_audio]), expected)


async def test_frames_that_are_not_whole_10_ms_run_one_10_ms_frame_late() -> None:
    sizes = [FRAME, FRAME, 250, 250, 512, 100, FRAME]
    audio = white_noise(sum(sizes) / SAMPLE_RATE_HZ, rms=0.05)
    stage = EchoCancelStage(EchoCanceller())
    received = [f for f in await run_stage(stage, list(audio_frames(audio, sizes))) if isinstance(f, AudioFrame)]

    assert [len(f.samples) for f in received[: len(sizes)]] == sizes
    assert stage.latency_samples == AEC_FRAME_SAMPLES
    tail = received[-1]  # end of stream brings out the last 10 ms
    assert len(received) == len(sizes) + 1
    assert tail.pts_samples == sum(sizes) and len(tail.samples) == AEC_FRAME_SAMPLES


async def test_audio_that_is_not_16_khz_is_refused_with_a_clear_error() -> None:
    stage = EchoCancelStage(EchoCanceller())
    frame = AudioFrame(samples=np.zeros(960, np.float32), sample_rate_hz=48000, pts_samples=0)
    with pytest.raises(ValueError, match="takes 16000 Hz audio, got 48000 Hz"):
        await stage.process(frame)
    with pytest.raises(ValueError, match="takes 16000 Hz reference audio, got 24000 Hz"):
        stage.add_reference(np.zeros(480, np.float32), sample_rate_hz=24000)


def test_headphones_user_over_the_first_reply_is_kept() -> None:
    """No echo path (headphones): AEC3's start-up suppression must not eat the user's barge-in."""
    from voxline.models.echo import EchoCanceller
    from voxline.testing.speech_synth import synthesize

    agent = synthesize("The story of a brave knight is a classic tale of courage and adventure.", 16000)
    user = synthesize("Stop, I want to ask something else.", 16000)
    start = 32000  # the user talks 2 s into the agent's first reply
    mic = np.zeros(len(agent), np.float32)
    mic[start : start + len(user)] = user[: len(agent) - start]
    canceller = EchoCanceller()
    out = []
    for i in range(0, len(agent) - 320, 320):
        canceller.add_reference(agent[i : i + 320])
        out.append(canceller.process(mic[i : i + 320]))
    cleaned = np.concatenate(out)[start : start + len(user)]
    kept = np.sqrt(np.mean(cleaned**2)) / np.sqrt(np.mean(mic[start : start + len(user)] ** 2))
    assert kept > 0.8, f"only {kept:.0%} of the user's voice survived"
    assert canceller.coupling is not None and canceller.coupling.bypass


def test_coupling_detector_never_bypasses_a_late_echo_and_keeps_a_headset_verdict() -> None:
    from voxline.models.echo_coupling import EchoCouplingDetector
    from voxline.testing.speech_synth import synthesize

    agent = synthesize("The story of a brave knight is a classic tale of courage and adventure.", 16000)
    gap = np.zeros(16000, np.float32)
    played = np.concatenate([agent, gap, agent])
    for delay_ms in (50, 250, 450):
        delay = delay_ms * 16
        mic = 0.5 * np.concatenate([np.zeros(delay, np.float32), played])[: len(played)]
        detector = EchoCouplingDetector()
        for i in range(0, len(played), 160):
            detector.feed(played[i : i + 160], mic[i : i + 160])
            assert not detector.bypass, f"raw echo passed with a {delay_ms} ms echo at {i / 16000:.2f} s"
        assert detector.coupling > 0.6
    headset = EchoCouplingDetector()
    bypassed_from = None
    for i in range(0, len(played), 160):
        headset.feed(played[i : i + 160], np.zeros(160, np.float32) + 1e-4 * np.sin(np.arange(160)))
        if headset.bypass and bypassed_from is None:
            bypassed_from = i / 16000
        if bypassed_from is not None:
            assert headset.bypass  # kept through the gap and the second reply
    assert bypassed_from is not None and bypassed_from < 1.6
