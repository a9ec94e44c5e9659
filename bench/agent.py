"""The voice agent end to end, in-process: voice-to-voice latency, barge-in, echo, drafting.

Engines load once; every phase runs a fresh session at real-time pace (20 ms ticks)
with user audio synthesized by the packaged Piper voice.

1. **Turns** (``--turns T``): T questions, each said after the agent answered the one
   before. ``v2v_ms``: the wall time the question's last loud sample was sent → the
   wall time of the first loud sample (|x| > 0.01) the agent played after it, measured
   here from the audio, not taken from the agent. ``breakdown_ms``: medians of the
   agent's own ``turn_latency`` spans (asr_final, endpoint, llm_first_token,
   tts_first_audio, audio_out; each from the previous mark). ``audio_gap_ms``: replies
   whose audio stopped for want of synthesized audio before they ended, and the longest
   such silence (the agent's ``gap_ms``).
2. **Barge-in** (``--bargeins B``): the agent is asked for a story; 1 s into its audio
   the user says something over it, cycling through a real interruption, a backchannel
   ("uh-huh", "yeah", "okay", "right", "sure") and a wordless noise burst.
   ``bargein_pause_ms``: the wall time of the barge-in's first loud sample → the first
   played frame that is silent (the agent paused or was stopped). ``backchannel_resumed``
   / ``noise_resumed``: the fraction of those trials after which the agent resumed the
   same reply and finished it; ``interruptions_stopped``: the fraction of real
   interruptions that ended the reply.
3. **Echo** (``--echo``): phases 1 and 2 again with the simulated device feeding the
   agent's audio back into its microphone (120 ms, gain 0.5, a short room response,
   noise at -60 dBFS). ``self_interruptions_with_echo``: replies stopped while the user
   was silent; ``self_pauses_with_echo``: pauses while the user was silent;
   ``echo_words_in_user_transcript``: user finals heard while the user was silent.
4. **Mid-sentence pauses**: six utterances with a ``--pause-s`` thinking pause inside
   ("I would like to book a table for ... two people tonight."), with the adaptive end
   of turn and with a fixed one (every final ends the turn): ``false_cutins`` counts
   replies that started playing before the user finished.
   With ``--sessions N`` the turns phase also runs N sessions at once on the shared
   engines (``concurrent``: v2v over all their turns, turns answered).
5. **Drafting**: the agent's own turn prompts, generated greedily with and without
   prompt-lookup drafting on the same engine settings: ``spec_decode_speedup`` is the
   ratio of median tokens/s (with / without).

6. **Test sets** (``--set real,hard,piper``; ``real`` always runs): every recording of
   the set (``bench/speech_sets.py``) said as one user turn, its pauses included, the
   next one after the agent answered. ``piper`` here is the bench's questions. Per set:
   ``v2v_ms`` (as in phase 1), ``turns`` {asked, answered: the agent spoke after the
   recording ended, before the next}, ``cut_ins``: agent audio starting (a loud frame
   after a silent one) between the recording's first and last loud sample, i.e. while
   the speaker was still speaking (``cut_ins_by_recording``: where, for those with any);
   ``heard``: the user turns the agent answered.
   ``--telephone`` says each recording over a phone line instead (``bench/narrowband.py``:
   soxr to 8 kHz, G.711 μ-law, or ``--law alaw``, and back; a set's noise goes on
   before the line): the session is fed 20 ms frames of 160 samples at 8 kHz, as
   ``stream/telephony/phone_call.py`` feeds it, and its own resample stage takes them
   to 16 kHz. Speech bounds (v2v, cut-ins) are those of the line's audio.
   ``--telephone both`` runs every set at 16 kHz and then over the line on the same
   engines: the set's object holds the 16 kHz figures, its ``telephone`` object the
   line's, ``telephone_delta`` the differences (line minus 16 kHz).

The last line of stdout is one JSON object.

    python bench/agent.py --json [--turns 8] [--bargeins 9] [--echo] [--set real,hard,piper]
    python bench/agent.py --json --set real --telephone both

With ``--url http://HOST:PORT [--calls N]`` it runs none of the above: real WebRTC
calls to a running ``voxline serve`` instead, described in ``bench/agent_calls.py``.

    python bench/agent.py --url http://127.0.0.1:8765 --calls 4 --turns 4 --bargeins 0 --json
    python bench/agent.py --url http://127.0.0.1:8765 --set real --calls 1 --bargeins 0 --json

With ``--url`` and ``--set`` each call says the set's recordings instead of the questions
(one turn each; ``cut_ins`` as above, on what the caller received), one set after another.
``--echo-gain G --echo-delay-ms D`` makes each caller one without echo cancellation on
a loudspeaker: what it hears comes back into its microphone (see ``agent_calls.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from narrowband import PHONE_RATE_HZ, telephone
from percentiles import p50_p95
from speech_sets import SET_NAMES, SET_NOISE_SNR_DB, add_noise, load_set, speech_rms

from voxline.clients.agent_runner import PacedAgentLoop, TurnTakingUser
from voxline.config import Config, load_config
from voxline.models.llm import LlamaEngine
from voxline.pipeline.frames import AudioFrame, Frame
from voxline.pipeline.recipes.agent import LISTEN_RATE_HZ, AgentEngines, build_agent_session
from voxline.testing.scripted_users import SpeakOverAgent
from voxline.testing.speech_synth import synthesize

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "Can you recommend a good book?",
    "What is the boiling point of water?",
    "Tell me something about the moon.",
    "How do I make a cup of tea?",
    "Why do cats purr?",
    "What should I cook for dinner tonight?",
    "What is the tallest mountain in the world?",
]
STORY = "Tell me a long story about a brave knight and a dragon."
INTERRUPTIONS = ["Stop, I want to ask something else.", "Wait, tell me about the weather instead.", "No, that is not what I meant."]
# "Mm-hmm." is left out: Piper renders it as a hum Whisper hears as words ("in a month").
BACKCHANNELS = ["Uh-huh.", "Yeah.", "Okay.", "Right.", "Sure."]
LOUD = 0.01


PAUSED_UTTERANCES = [
    ("I would like to book a table for", "two people tonight."),
    ("Can you tell me the", "name of the tallest mountain?"),
    ("I was thinking about", "going to the beach tomorrow."),
    ("What do you think about", "the weather today?"),
    ("So, um,", "what time is it?"),
    ("My favorite food is", "pizza with extra cheese."),
]


def _trimmed(audio: np.ndarray) -> np.ndarray:
    """``audio`` without Piper's leading and trailing silence (so a pause is exactly as long as set)."""
    loud = np.flatnonzero(np.abs(audio) > LOUD)
    return audio[loud[0] : loud[-1] + 1] if len(loud) else audio


def _noise_burst(seconds: float, seed: int) -> np.ndarray:
    """A cough-like burst: band-limited noise with a fast attack and decay."""
    rng = np.random.default_rng(seed)
    n = int(seconds * LISTEN_RATE_HZ)
    noise = rng.standard_normal(n).astype(np.float32)
    noise = np.convolve(noise, np.ones(6, np.float32) / 6, mode="same")
    envelope = np.exp(-np.linspace(0, 6, n)).astype(np.float32) * np.minimum(1, np.linspace(0, 20, n))
    return (0.3 * noise * envelope).astype(np.float32)


def _echo_device(seed: int) -> Any:
    from voxline.clients.echo_device import EchoDevice

    return EchoDevice(delay_ms=120, gain=0.5, seed=seed)


def _first_loud_after(loop: PacedAgentLoop, after: float) -> float | None:
    for at, frame in zip(loop.played_at, loop.played, strict=True):
        if at >= after and np.abs(frame).max(initial=0) > LOUD:
            return at
    return None


def _first_silent_after(loop: PacedAgentLoop, after: float) -> float | None:
    for at, frame in zip(loop.played_at, loop.played, strict=True):
        if at >= after and not frame.any():
            return at
    return None


async def run_turns(engines: AgentEngines, turns: int, *, echo: bool) -> dict[str, Any]:
    """Phase 1: T question/answer turns; v2v from the audio, breakdown from the agent."""
    session = build_agent_session(engines)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(turns)]
    clips = [np.concatenate([np.zeros(LISTEN_RATE_HZ // 2, np.float32), synthesize(q, LISTEN_RATE_HZ)]) for q in questions]
    user = TurnTakingUser(clips, gap_s=0.8)
    loop = PacedAgentLoop(session, user, echo_device=_echo_device(1) if echo else None)
    await session.graph.start()
    try:
        await loop.run(lambda _: user.done, max_s=25.0 * turns + 10)
    finally:
        await session.graph.cancel()
    v2v = []
    for end in user.speech_end_wall:
        first = _first_loud_after(loop, end)
        if first is not None:
            v2v.append((first - end) * 1000)
    latencies = [e for e in loop.events if e["type"] == "turn_latency"]
    spans: dict[str, list[float]] = {}
    for event in latencies:
        for name, ms in event["breakdown_ms"].items():
            spans.setdefault(name, []).append(ms)
    answered = sum(e["type"] == "agent_done" and bool(e.get("text")) for e in loop.events)
    gaps = [e.get("gap_ms", 0.0) for e in loop.events if e["type"] == "agent_done" and e.get("text")]
    prompts = [m for m in session.agent.conversation.messages()]
    return {
        "v2v_ms": p50_p95(v2v),
        "v2v_all": v2v,
        "breakdown_ms": {k: round(statistics.median(v), 1) for k, v in spans.items()},
        "agent_v2v_ms": p50_p95([e["v2v_ms"] for e in latencies if e["v2v_ms"] is not None]),
        "turns": turns,
        "answered": answered,
        "audio_gap_ms": {"replies_with_gap": sum(g > 0 for g in gaps), "max": max(gaps, default=0.0)},
        "interrupted": sum(e["type"] == "interrupted" for e in loop.events),
        "paused": sum(e["type"] == "agent_paused" for e in loop.events),
        "discarded": sum(e["type"] == "reply_discarded" for e in loop.events),
        "user_finals": [e["text"] for e in loop.events if e["type"] == "user_final"],
        "questions": questions,
        "history": prompts,
        "events": loop.events,
    }


def set_recordings(name: str) -> list[tuple[str, np.ndarray]]:
    """(reference, 16 kHz audio) of every recording of a set; ``piper``: the bench's questions."""
    if name == "piper":
        return [(q, synthesize(q, LISTEN_RATE_HZ)) for q in QUESTIONS]
    clips = load_set(name)
    noise_db = SET_NOISE_SNR_DB.get(name)
    level = speech_rms(clips)
    return [
        (c.text, c.audio if noise_db is None else add_noise(c.audio, noise_db, level, seed=i))
        for i, c in enumerate(clips)
    ]


class PhoneLineInput:
    """The session's input edge as a phone call feeds it: the loop's mic frames, 8 kHz.

    ``PacedAgentLoop`` labels what it sends 16 kHz; ``PhoneLineUser`` hands it 8 kHz
    audio (half the samples a tick), so each frame is relabelled here, its pts already
    counted in 8 kHz samples. Other frames (end of stream) pass as they are.
    """

    def __init__(self, edge: Any) -> None:
        self.edge = edge

    def put_nowait(self, frame: Frame) -> bool:
        """Queue ``frame`` on the session's edge (its return value: False when full)."""
        if isinstance(frame, AudioFrame):
            frame = dataclasses.replace(frame, sample_rate_hz=PHONE_RATE_HZ)
        return bool(self.edge.put_nowait(frame))


class PhoneLineUser:
    """A ``TurnTakingUser`` of 8 kHz clips, asked for 8 kHz's share of each 16 kHz tick."""

    def __init__(self, user: TurnTakingUser) -> None:
        self.user = user

    @property
    def done(self) -> bool:
        """As the wrapped user's."""
        return self.user.done

    def __call__(self, n_samples: int, loop: PacedAgentLoop) -> np.ndarray:
        """The next ``n_samples × 8 / 16`` samples of the 8 kHz clip (or silence)."""
        return self.user(n_samples * PHONE_RATE_HZ // LISTEN_RATE_HZ, loop)


def _end_shift_ms(wide: np.ndarray, narrow: np.ndarray) -> float:
    """How much earlier (ms) the last loud sample comes after the phone line than before it."""
    loud_wide, loud_narrow = np.flatnonzero(np.abs(wide) > LOUD), np.flatnonzero(np.abs(narrow) > LOUD)
    if not len(loud_wide) or not len(loud_narrow):
        return 0.0
    return (loud_wide[-1] / LISTEN_RATE_HZ - loud_narrow[-1] / PHONE_RATE_HZ) * 1000


def _onsets(loop: PacedAgentLoop, start: float, end: float) -> int:
    """Agent audio starting (a loud frame after a quiet one) in [start, end] (wall times)."""
    count, before = 0, False
    for at, frame in zip(loop.played_at, loop.played, strict=True):
        loud = bool(np.abs(frame).max(initial=0) > LOUD)
        if start <= at <= end and loud and not before:
            count += 1
        before = loud
    return count


async def run_set(engines: AgentEngines, name: str, *, law: str | None = None) -> dict[str, Any]:
    """Phase 6: each recording of the set as one user turn; v2v, answered, cut-ins.

    ``law`` ("ulaw" / "alaw"): over a phone line, the session fed 8 kHz G.711 audio.
    """
    recordings = set_recordings(name)
    session = build_agent_session(engines)
    extra: dict[str, Any] = {"input": {"rate_hz": LISTEN_RATE_HZ, "g711": None}}
    source: Any
    if law is None:
        lead = np.zeros(LISTEN_RATE_HZ // 2, np.float32)
        user = TurnTakingUser([np.concatenate([lead, audio]) for _, audio in recordings], gap_s=0.8)
        source = user
    else:
        narrow = [telephone(audio, law) for _, audio in recordings]  # type: ignore[arg-type]
        lead = np.zeros(PHONE_RATE_HZ // 2, np.float32)
        user = TurnTakingUser([np.concatenate([lead, audio]) for audio in narrow], gap_s=0.8)
        source = PhoneLineUser(user)
        session = dataclasses.replace(session, audio_in=PhoneLineInput(session.audio_in))
        shifts = [_end_shift_ms(wide, n) for (_, wide), n in zip(recordings, narrow, strict=True)]
        extra = {
            "input": {"rate_hz": PHONE_RATE_HZ, "g711": law},
            "speech_end_earlier_ms": {"mean": round(float(np.mean(shifts)), 1), "max": round(max(shifts), 1)},
        }
    loop = PacedAgentLoop(session, source)
    await session.graph.start()
    try:
        total_s = sum(len(a) for _, a in recordings) / LISTEN_RATE_HZ
        await loop.run(lambda _: user.done, max_s=total_s + 30.0 * len(recordings) + 10)
    finally:
        await session.graph.cancel()
    v2v, answered, cut_ins_by_recording = [], 0, [0] * len(recordings)
    starts, ends = user.speech_start_wall, user.speech_end_wall
    for i, end in enumerate(ends):
        next_start = starts[i + 1] if i + 1 < len(starts) else float("inf")
        first = _first_loud_after(loop, end)
        if first is not None and first < next_start:
            answered += 1
            v2v.append((first - end) * 1000)
        if i < len(starts):
            cut_ins_by_recording[i] = _onsets(loop, starts[i], end)
    cut_ins = sum(cut_ins_by_recording)
    return {
        **extra,
        "v2v_ms": p50_p95(v2v),
        "turns": {"asked": len(recordings), "answered": answered},
        "cut_ins": cut_ins,
        "cut_ins_by_recording": {
            f"{i}: {' '.join(text.split()[:4])}": n for i, ((text, _), n) in enumerate(zip(recordings, cut_ins_by_recording, strict=True)) if n
        },
        "discarded_unheard": sum(e["type"] == "reply_discarded" for e in loop.events),
        "skipped_ticks": loop.skipped_ticks,
        "heard": [e["text"] for e in loop.events if e["type"] == "user_turn"],
    }


def telephone_delta(wide: dict[str, Any], phone: dict[str, Any]) -> dict[str, Any]:
    """Phone line minus 16 kHz on one set: v2v ms, turns answered, cut-ins."""

    def diff(a: Any, b: Any) -> float | None:
        return round(b - a, 1) if isinstance(a, int | float) and isinstance(b, int | float) else None

    return {
        "v2v_ms_p50": diff(wide["v2v_ms"].get("p50"), phone["v2v_ms"].get("p50")),
        "v2v_ms_p95": diff(wide["v2v_ms"].get("p95"), phone["v2v_ms"].get("p95")),
        "answered": diff(wide["turns"]["answered"], phone["turns"]["answered"]),
        "cut_ins": diff(wide["cut_ins"], phone["cut_ins"]),
    }


async def run_set_lines(engines: AgentEngines, name: str, telephone_mode: str, law: str) -> dict[str, Any]:
    """One set at 16 kHz, over the phone line, or both (16 kHz first; then ``telephone``)."""
    if telephone_mode == "on":
        return await run_set(engines, name, law=law)
    wide = await run_set(engines, name)
    if telephone_mode == "off":
        return wide
    phone = await run_set(engines, name, law=law)
    return {**wide, "telephone": phone, "telephone_delta": telephone_delta(wide, phone)}


def real_over_piper(by_set: dict[str, dict[str, Any]]) -> float | None:
    """v2v p50 on the real set ÷ on the Piper set, both from this run (None without both)."""
    real, piper = (by_set.get(name, {}).get("v2v_ms", {}).get("p50") for name in ("real", "piper"))
    return round(real / piper, 2) if real and piper else None


def _barge_clip(kind: str, i: int) -> np.ndarray:
    if kind == "interrupt":
        return synthesize(INTERRUPTIONS[i % len(INTERRUPTIONS)], LISTEN_RATE_HZ)
    if kind == "backchannel":
        return synthesize(BACKCHANNELS[i % len(BACKCHANNELS)], LISTEN_RATE_HZ)
    return _noise_burst(0.35, seed=i)


async def run_bargeins(engines: AgentEngines, trials: int, *, echo: bool) -> dict[str, Any]:
    """Phase 2: interruptions, backchannels and noise spoken over the agent."""
    session = build_agent_session(engines)
    kinds = [("interrupt", "backchannel", "noise")[i % 3] for i in range(trials)]
    question = np.concatenate([np.zeros(LISTEN_RATE_HZ // 2, np.float32), synthesize(STORY, LISTEN_RATE_HZ)])
    user = SpeakOverAgent(question, [_barge_clip(kind, i // 3) for i, kind in enumerate(kinds)])
    loop = PacedAgentLoop(session, user, echo_device=_echo_device(2) if echo else None)
    await session.graph.start()
    try:
        await loop.run(lambda _: user.done, max_s=40.0 * trials + 10)
    finally:
        await session.graph.cancel()
    pauses, outcome = [], {"interrupt": [], "backchannel": [], "noise": []}  # type: dict[str, list[bool]]
    for i, onset in enumerate(user.onsets):
        kind = kinds[i]
        silent = _first_silent_after(loop, onset)
        if silent is not None and kind != "noise":  # speech must pause the agent; noise need not
            pauses.append((silent - onset) * 1000)
        reply = user.reply_ids[i] if i < len(user.reply_ids) else None
        of_reply = [e for e in loop.events if e.get("reply") == reply]
        interrupted = any(e["type"] == "interrupted" for e in of_reply)
        resumed = any(e["type"] == "agent_resumed" for e in of_reply)
        finished = any(e["type"] == "agent_done" for e in of_reply)
        paused = any(e["type"] == "agent_paused" for e in of_reply)
        kept_on = finished and not interrupted and (resumed or not paused)
        outcome[kind].append(interrupted if kind == "interrupt" else kept_on)
    frac = {k: (round(sum(v) / len(v), 3) if v else None) for k, v in outcome.items()}
    return {
        "bargein_pause_ms": p50_p95(pauses),
        "backchannel_resumed": frac["backchannel"],
        "noise_resumed": frac["noise"],
        "interruptions_stopped": frac["interrupt"],
        "bargeins": len(user.onsets),
        "events": loop.events,
    }


async def run_paused_utterances(engines: AgentEngines, *, pause_s: float, adaptive: bool) -> dict[str, Any]:
    """Phase 5: utterances with a thinking pause mid-sentence; does the agent cut in?

    A false cut-in is a reply that started playing before the user finished: its
    ``user_turn`` lacks the second half and it produced audio. A premature endpoint
    that was discarded before any audio (``reply_discarded``) costs only compute.
    ``adaptive=False`` ends every turn at the first final (no reading of the words).
    """
    import dataclasses

    from voxline.pipeline.agent.turn_taking import TurnWaits
    from voxline.pipeline.recipes.agent import agent_settings

    settings = agent_settings(engines.config)
    if not adaptive:
        settings = dataclasses.replace(settings, waits=TurnWaits(0.0, 0.0))
    session = build_agent_session(engines, settings=settings)
    clips = [
        np.concatenate([np.zeros(LISTEN_RATE_HZ // 2, np.float32), _trimmed(synthesize(a, LISTEN_RATE_HZ)),
                        np.zeros(int(pause_s * LISTEN_RATE_HZ), np.float32), _trimmed(synthesize(b, LISTEN_RATE_HZ))])
        for a, b in PAUSED_UTTERANCES
    ]
    user = TurnTakingUser(clips, gap_s=0.8)
    loop = PacedAgentLoop(session, user)
    await session.graph.start()
    try:
        await loop.run(lambda _: user.done, max_s=40.0 * len(clips))
    finally:
        await session.graph.cancel()
    played = {e["reply"] for e in loop.events if e["type"] == "agent_text"}
    cut_ins = 0
    for event in loop.events:
        if event["type"] == "user_turn" and event["reply"] in played:
            words = event["text"].lower()
            if not any(b.split()[-1].strip("?.").lower() in words for _, b in PAUSED_UTTERANCES):
                cut_ins += 1
    return {
        "false_cutins": cut_ins,
        "premature_endpoints_discarded": sum(e["type"] == "reply_discarded" for e in loop.events),
        "utterances": len(clips),
    }


async def spec_decode(config: Config, prompts: list[list[dict[str, str]]], max_tokens: int) -> dict[str, Any]:
    """Phase 4: tokens/s on the same prompts with and without prompt-lookup drafting."""
    rates: dict[str, list[float]] = {}
    texts: dict[str, list[str]] = {}
    for name, draft in (("plain", None), ("prompt_lookup", "prompt_lookup")):
        engine = LlamaEngine(config.llm.model or None, n_threads=config.llm.n_threads, draft=draft)
        await engine.start()
        try:
            for messages in prompts:
                stream = engine.stream(messages, max_tokens=max_tokens)
                texts.setdefault(name, []).append(await stream.text())
                rates.setdefault(name, []).append(stream.stats.tokens_per_s)
        finally:
            await engine.close()
    plain = statistics.median(rates["plain"])
    drafted = statistics.median(rates["prompt_lookup"])
    return {
        "spec_decode_speedup": round(drafted / plain, 3) if plain else None,
        "tokens_per_s": {"plain": round(plain, 1), "prompt_lookup": round(drafted, 1)},
        "spec_decode_same_text": texts["plain"] == texts["prompt_lookup"],
    }


def _silent_user_events(events: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "self_interruptions": sum(e["type"] == "interrupted" for e in events),
        "self_pauses": sum(e["type"] == "agent_paused" for e in events),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--bargeins", type=int, default=9)
    parser.add_argument("--echo", action="store_true", help="also run with the simulated echo device")
    parser.add_argument("--sessions", type=int, default=1, help="also run the turns phase with N sessions at once")
    parser.add_argument("--no-spec", action="store_true", help="skip the drafting comparison")
    parser.add_argument("--no-pauses", action="store_true", help="skip the mid-sentence pause phase")
    parser.add_argument("--pause-s", type=float, default=0.7, help="the thinking pause inside each paused utterance")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary line")
    parser.add_argument("--url", help="call a running server (http://HOST:PORT) over WebRTC instead (agent_calls.py)")
    parser.add_argument("--calls", type=int, default=1, help="with --url: N calls at once")
    parser.add_argument("--echo-gain", type=float, default=0.0, help="with --url: each caller's loudspeaker echo gain")
    parser.add_argument("--echo-delay-ms", type=float, default=120.0, help="with --url: that echo's delay")
    parser.add_argument(
        "--set", default="", help=f"comma-separated test sets ({', '.join(SET_NAMES)}) spoken turn by turn; real always runs"
    )
    parser.add_argument(
        "--telephone", nargs="?", const="on", default="off", choices=("off", "on", "both"),
        help="with --set: say the recordings over an 8 kHz G.711 line (both: 16 kHz, then the line)",
    )
    parser.add_argument("--law", default="ulaw", choices=("ulaw", "alaw"), help="the phone line's G.711 law")
    args = parser.parse_args()
    sets = [n.strip() for n in args.set.split(",") if n.strip()]
    if args.telephone != "off" and (not sets or args.url):
        parser.error("--telephone needs --set and runs in-process only")
    if sets and "real" not in sets:
        sets.insert(0, "real")  # real speech is always reported beside the others
    if args.url:
        from agent_calls import run_calls

        if not sets:
            print(json.dumps(await run_calls(
                args.url, calls=args.calls, turns=args.turns, bargeins=args.bargeins, questions=QUESTIONS,
                story=STORY, interruptions=INTERRUPTIONS, verbose=not args.json,
                echo_gain=args.echo_gain, echo_delay_ms=args.echo_delay_ms,
            )))
            return
        by_set = {}
        for name in sets:
            by_set[name] = await run_calls(
                args.url, calls=args.calls, turns=args.turns, bargeins=args.bargeins, questions=QUESTIONS,
                story=STORY, interruptions=INTERRUPTIONS, verbose=not args.json,
                recordings=set_recordings(name), echo_gain=args.echo_gain, echo_delay_ms=args.echo_delay_ms,
            )
        print(json.dumps({
            "bench": "agent_calls", "calls": args.calls, "sets": by_set, "real_over_piper_v2v_p50": real_over_piper(by_set),
        }))
        return
    config = load_config()
    engines = await AgentEngines.load(config)
    started = time.process_time(), time.monotonic()
    try:
        if sets:
            by_set = {name: await run_set_lines(engines, name, args.telephone, args.law) for name in sets}
            print(json.dumps({
                "bench": "agent", "mode": "in_process", "sets": by_set, "real_over_piper_v2v_p50": real_over_piper(by_set),
            }))
            return
        turns = await run_turns(engines, args.turns, echo=False)
        barge = await run_bargeins(engines, args.bargeins, echo=False)
        result: dict[str, Any] = {
            "v2v_ms": turns["v2v_ms"], "breakdown_ms": turns["breakdown_ms"], "agent_v2v_ms": turns["agent_v2v_ms"],
            "turns": args.turns, "answered": turns["answered"], "audio_gap_ms": turns["audio_gap_ms"],
            "bargein_pause_ms": barge["bargein_pause_ms"], "backchannel_resumed": barge["backchannel_resumed"],
            "noise_resumed": barge["noise_resumed"], "interruptions_stopped": barge["interruptions_stopped"],
            "bargeins": barge["bargeins"],
        }
        if not args.json:
            print("user finals:", turns["user_finals"], file=sys.stderr)
        if args.sessions > 1:
            runs = await asyncio.gather(*(run_turns(engines, args.turns, echo=False) for _ in range(args.sessions)))
            v2v_all: list[float] = []
            for run in runs:
                v2v_all += run["v2v_all"]
            result["concurrent"] = {
                "sessions": args.sessions, "v2v_ms": p50_p95(v2v_all),
                "answered": sum(r["answered"] for r in runs), "turns": args.turns * args.sessions,
            }
        if not args.no_pauses:
            result["mid_sentence_pause"] = {
                "pause_ms": round(args.pause_s * 1000),
                "adaptive": await run_paused_utterances(engines, pause_s=args.pause_s, adaptive=True),
                "fixed": await run_paused_utterances(engines, pause_s=args.pause_s, adaptive=False),
            }
        if args.echo:
            echo_turns = await run_turns(engines, args.turns, echo=True)
            echo_barge = await run_bargeins(engines, args.bargeins, echo=True)
            silent = _silent_user_events(echo_turns["events"])
            result["echo"] = {
                "v2v_ms": echo_turns["v2v_ms"], "answered": echo_turns["answered"],
                "self_pauses": silent["self_pauses"],
                "user_finals": echo_turns["user_finals"],
                "bargein_pause_ms": echo_barge["bargein_pause_ms"],
                "backchannel_resumed": echo_barge["backchannel_resumed"],
                "noise_resumed": echo_barge["noise_resumed"],
                "interruptions_stopped": echo_barge["interruptions_stopped"],
            }
            result["self_interruptions_with_echo"] = silent["self_interruptions"]
            result["echo_words_in_user_transcript"] = max(0, len(echo_turns["user_finals"]) - args.turns)
        if not args.no_spec:
            prompts = []
            history = turns["history"]
            for i, message in enumerate(history):
                if message["role"] == "user":
                    prompts.append(history[: i + 1])
            result.update(await spec_decode(config, prompts, config.agent.max_reply_tokens))
        cpu_s, wall_s = time.process_time() - started[0], time.monotonic() - started[1]
        result["cpu_util"] = round(cpu_s / wall_s / (os.cpu_count() or 1), 3)
    finally:
        await engines.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
