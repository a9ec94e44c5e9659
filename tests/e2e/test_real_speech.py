"""Real human recordings (``bench/data/real``) through the captioner and the agent.

Real models, real-time pace. What a user would notice: the words of each recording
come out, first and last ones included; the agent never starts talking while a
speaker leaves 180–340 ms between sentences; and it answers once a long read passage
(53 s, pauses of 0.26–2 s) is over. (It does still cut in at that passage's longer
pauses between lines: ``bench/agent.py --set real`` counts those.)
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.agent_talk import converse
from tests.speech_fixtures import normalize, silence, word_errors
from voxline.clients.agent_runner import PacedAgentLoop, TurnTakingUser
from voxline.clients.caption_runner import caption_locally
from voxline.config import load_config
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from real_speech import LONG_PASSAGE, real_clip
from testset import speech_bounds

pytestmark = pytest.mark.slow
RATE = 16000
CAPTIONED = ("jfk_inaugural", "austen_0870", "austen_0880", "austen_0930", "arctic_a0009", "goforward")


async def _paced(audio: np.ndarray, speedup: float = 1.0) -> AsyncIterator[np.ndarray]:
    import asyncio
    import time

    step = RATE // 10
    started = time.monotonic()
    for start in range(0, len(audio), step):
        await asyncio.sleep(max(0.0, started + (start + step) / RATE / speedup - time.monotonic()))
        yield audio[start : start + step]


async def test_real_recordings_are_captioned_with_their_first_and_last_words(caption_engines: CaptionEngines) -> None:
    clips = [real_clip(name) for name in CAPTIONED]
    gaps = [silence(0.9)] * len(clips)
    audio = np.concatenate([x for clip, gap in zip(clips, gaps, strict=True) for x in (gap, clip.audio)] + [silence(1.0)])
    finals: list[dict[str, Any]] = []
    async for event in caption_locally(_paced(audio), RATE, load_config(env={}), caption_engines):
        if event["type"] == "final":
            finals.append(event)
    heard = " ".join(e["text"] for e in finals)
    reference = " ".join(c.text for c in clips)
    assert word_errors(reference, heard) <= 0.12 * len(normalize(reference)), heard
    words = normalize(heard)
    for clip in clips:  # nothing lost at the recordings' edges
        first, last = normalize(clip.text)[0], normalize(clip.text)[-1]
        assert first in words and last in words, (clip.name, heard)
    assert "what your country can do for you ask what you can do for your country" in " ".join(words)


async def _talk(engines: AgentEngines, clips: list[np.ndarray], max_s: float) -> tuple[PacedAgentLoop, TurnTakingUser]:
    user = TurnTakingUser([np.concatenate([silence(0.5), c]) for c in clips], gap_s=0.5, answer_timeout_s=20.0)
    loop, _ = await converse(engines, user, max_s=max_s)
    return loop, user


def _loud_between(loop: PacedAgentLoop, start: float, end: float) -> list[float]:
    return [
        at for at, frame in zip(loop.played_at, loop.played, strict=True)
        if start <= at <= end and np.abs(frame).max(initial=0) > 0.01
    ]


async def test_no_cut_in_on_a_recitation_of_short_real_sentences_with_short_pauses(agent_engines: AgentEngines) -> None:
    # Four real recordings, one after another with 180-340 ms pauses, as one turn.
    pauses_s = (0.18, 0.34, 0.25)
    clips = [real_clip(n) for n in ("praatio_mary", "praatio_bobby", "austen_0930", "arctic_a0009")]
    spoken: list[np.ndarray] = []
    for pause_s, clip in zip((0.0, *pauses_s), clips, strict=True):
        # The recordings' own room noise before and after the words is cut (10 % of the
        # peak, 20 ms margin), so the pauses between them are what is set here.
        first, last = speech_bounds(clip.audio, 0.1)
        spoken += [silence(pause_s), clip.audio[max(0, first - 320) : last + 320]]
    loop, user = await _talk(agent_engines, [np.concatenate(spoken)], max_s=40)
    start, end = user.speech_start_wall[0], user.speech_end_wall[0]
    assert not _loud_between(loop, start, end), "the agent talked while the speaker was between sentences"
    turns = [e["text"].lower() for e in loop.events if e["type"] == "user_turn"]
    assert len(turns) == 1 and "mary" in turns[0] and "amiable" in turns[0] and "table" in turns[0], turns
    assert _loud_between(loop, end, end + 5.0), "no answer within 5 s of the end"


async def test_the_agent_answers_after_a_long_read_passage(agent_engines: AgentEngines) -> None:
    passage = real_clip(LONG_PASSAGE)  # 53 s, pauses of 0.26-2 s between lines
    loop, user = await _talk(agent_engines, [passage.audio], max_s=len(passage.audio) / RATE + 40)
    end = user.speech_end_wall[0]
    assert _loud_between(loop, end, end + 5.0), "no answer within 5 s of the end of the passage"
    last_turn = [e for e in loop.events if e["type"] == "user_turn"][-1]
    assert "grave" in last_turn["text"].lower(), last_turn
