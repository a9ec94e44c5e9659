"""A deterministic speech test set for caption benchmarks and tests.

Clips are either synthesized by Piper from ``SENTENCES`` (fixed, everyday/news-like
English without digits or proper nouns, so Whisper has one obvious spelling) or read
from a directory of ``X.wav`` files each with an ``X.txt`` reference.

``build_stream`` lays clips out as one session's audio: a leading silence (staggered
per session), then the clips (order rotated per session) separated by silences of
0.8–1.2 s in a fixed pattern, then a trailing silence, up to a target length. For every
clip it records where its speech starts and ends in the stream: the first/last sample
whose magnitude exceeds 1 % of the clip's peak (Piper pads its output with silence).

    clips = synthesize_clips()
    stream = build_stream(clips, session_index=0, target_s=45.0)
    stream.audio, stream.sentences[0].speech_end_s, stream.reference
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE_HZ = 16000

SENTENCES: tuple[str, ...] = (
    "The weather will stay cool and cloudy for most of the week ahead.",
    "Please remember to water the plants before you leave the house.",
    "The city council voted to build a new park near the river.",
    "She bought fresh bread and a bag of apples at the market this morning.",
    "Heavy rain caused delays on several roads during the evening commute.",
    "My brother is learning to play the piano in his spare time.",
    "The museum will open a new exhibit about ancient ships next month.",
    "We should leave early if we want to find a good place to sit.",
    "Local farmers are hoping for a warm and dry summer this year.",
    "The library has extended its opening hours for students during the exam season.",
    "He forgot his umbrella on the train and had to walk home in the rain.",
    "Scientists say the new bridge design is both safer and cheaper to maintain.",
    "Could you turn down the music a little while I finish this call?",
    "The children played in the garden until the sun went down.",
    "A small fire at the bakery was quickly put out by the neighbors.",
    "The company plans to hire more workers for its growing delivery service.",
    "Our teacher asked us to read the first chapter before class on Monday.",
    "The old lighthouse on the hill has become a popular place for visitors.",
)
"""The synthesized sentences (6–20 words each)."""

LEAD_S = 0.5
"""Leading silence of session 0 (s)."""
STAGGER_S = 0.37
"""Extra leading silence per session index (s), cycling every ``STAGGER_CYCLE`` sessions."""
STAGGER_CYCLE = 10
GAP_PATTERN_S: tuple[float, ...] = (0.8, 1.0, 1.2, 0.9, 1.1)
"""Silences between clips (s), cycled; each session starts at a different place."""
TAIL_S = 1.0
"""Trailing silence (s), so the last clip's final comes from the VAD, not end of input."""
ROTATE_BY = 5
"""Session ``i`` starts at clip ``(i * ROTATE_BY) % len(clips)``."""
SPEECH_FRACTION = 0.01
"""A sample is speech when its magnitude exceeds this fraction of the clip's peak."""

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Clip:
    """One spoken sentence and its reference text; ``speech_*`` are sample indices in ``audio``."""

    name: str
    text: str
    audio: FloatAudio
    speech_start: int
    speech_end: int


@dataclass(frozen=True, slots=True)
class Sentence:
    """A clip placed in a stream; sample indices and seconds are of the stream."""

    text: str
    clip: str
    start_sample: int
    speech_start_sample: int
    speech_end_sample: int
    end_sample: int

    @property
    def speech_start_s(self) -> float:
        return self.speech_start_sample / SAMPLE_RATE_HZ

    @property
    def speech_end_s(self) -> float:
        """End of speech in the sent audio (s): the last sample above 1 % of the peak."""
        return self.speech_end_sample / SAMPLE_RATE_HZ


@dataclass(frozen=True, slots=True)
class Stream:
    """One session's audio (16 kHz mono float32) and the sentences in it, in order."""

    audio: FloatAudio
    sentences: tuple[Sentence, ...]

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE_HZ

    @property
    def reference(self) -> str:
        """The sentences' texts joined by spaces."""
        return " ".join(s.text for s in self.sentences)


def speech_bounds(audio: FloatAudio, fraction: float = SPEECH_FRACTION) -> tuple[int, int]:
    """(first, last) sample index whose magnitude exceeds ``fraction`` of the peak; (0, -1) if none."""
    magnitude = np.abs(np.asarray(audio, dtype=np.float32))
    if magnitude.size == 0:
        return 0, -1
    above = np.flatnonzero(magnitude > fraction * float(magnitude.max()))
    if above.size == 0:
        return 0, -1
    return int(above[0]), int(above[-1])


def make_clip(name: str, text: str, audio: FloatAudio) -> Clip:
    """A ``Clip`` with its speech bounds measured."""
    audio = np.asarray(audio, dtype=np.float32)
    first, last = speech_bounds(audio)
    return Clip(name, text.strip(), audio, first, last)


@functools.lru_cache(maxsize=4)
def synthesize_clips(sentences: tuple[str, ...] = SENTENCES) -> tuple[Clip, ...]:
    """Piper speaking each sentence at 16 kHz, deterministic (cached per process)."""
    from voxline.testing.speech_synth import synthesize

    clips = []
    for i, text in enumerate(sentences):
        audio = synthesize(text, SAMPLE_RATE_HZ)
        audio.setflags(write=False)
        clips.append(make_clip(f"s{i:02d}", text, audio))
    return tuple(clips)


def load_wav_clips(directory: str | Path) -> tuple[Clip, ...]:
    """Every ``X.wav`` in ``directory`` (sorted) that has an ``X.txt``, as 16 kHz mono clips."""
    import soundfile

    clips = []
    for wav in sorted(Path(directory).glob("*.wav")):
        txt = wav.with_suffix(".txt")
        if not txt.exists():
            continue
        audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1).astype(np.float32)
        if rate != SAMPLE_RATE_HZ:
            import soxr

            audio = soxr.resample(audio, rate, SAMPLE_RATE_HZ).astype(np.float32)
        clips.append(make_clip(wav.stem, txt.read_text(encoding="utf-8"), audio))
    if not clips:
        raise FileNotFoundError(f"no X.wav with an X.txt reference in {directory}")
    return tuple(clips)


def _silence(seconds: float) -> FloatAudio:
    return np.zeros(round(seconds * SAMPLE_RATE_HZ), dtype=np.float32)


def build_stream(
    clips: tuple[Clip, ...] | list[Clip], session_index: int = 0, target_s: float = 45.0
) -> Stream:
    """One session's stream of about ``target_s`` seconds (at least one clip).

    Leading silence ``LEAD_S + (session_index % STAGGER_CYCLE) * STAGGER_S``; clips
    from ``(session_index * ROTATE_BY) % len(clips)`` on, cycling if needed; gaps from
    ``GAP_PATTERN_S`` starting at ``session_index``; ``TAIL_S`` of silence at the end.
    """
    if not clips:
        raise ValueError("no clips")
    parts: list[FloatAudio] = [_silence(LEAD_S + (session_index % STAGGER_CYCLE) * STAGGER_S)]
    position = len(parts[0])
    sentences: list[Sentence] = []
    target = round(target_s * SAMPLE_RATE_HZ)
    tail = round(TAIL_S * SAMPLE_RATE_HZ)
    k = 0
    while True:
        clip = clips[(session_index * ROTATE_BY + k) % len(clips)]
        gap = (
            _silence(GAP_PATTERN_S[(session_index + k - 1) % len(GAP_PATTERN_S)])
            if k
            else _silence(0)
        )
        if sentences and position + len(gap) + len(clip.audio) + tail > target:
            break
        parts.append(gap)
        position += len(gap)
        parts.append(clip.audio)
        sentences.append(
            Sentence(
                text=clip.text,
                clip=clip.name,
                start_sample=position,
                speech_start_sample=position + clip.speech_start,
                speech_end_sample=position + clip.speech_end,
                end_sample=position + len(clip.audio),
            )
        )
        position += len(clip.audio)
        k += 1
    parts.append(_silence(TAIL_S))
    audio = np.concatenate(parts).astype(np.float32, copy=False)
    return Stream(audio, tuple(sentences))


def utterance_audio(clips: tuple[Clip, ...] | list[Clip], seconds: float = 5.0) -> FloatAudio:
    """Exactly ``seconds`` of speech: clips back to back (0.3 s apart), cut to length."""
    parts: list[FloatAudio] = []
    total = 0
    want = round(seconds * SAMPLE_RATE_HZ)
    i = 0
    while total < want:
        clip = clips[i % len(clips)]
        piece = clip.audio[clip.speech_start : clip.speech_end + 1]
        parts += [piece, _silence(0.3)]
        total += len(piece) + round(0.3 * SAMPLE_RATE_HZ)
        i += 1
    return np.concatenate(parts)[:want].astype(np.float32)
