"""Voice calls to a running ``voxline serve`` over WebRTC: what a caller hears.

``bench/agent.py --url http://HOST:PORT`` runs this instead of its in-process phases.
Each call is a real aiortc peer (``voxline.clients.webrtc_client.CallClient``) in this
process. Its microphone track takes 20 ms of 48 kHz audio from the script at real-time
pace: the bench's questions, spoken by Piper at 16 kHz and resampled to 48 kHz (soxr),
silence otherwise. It receives the agent's audio frame by frame and the server's
events. Every time is ``time.monotonic()`` in this process. A sample is *sent* when
the track takes the frame that holds it (just before Opus encodes it). A frame is
*received* when its decoded audio reaches ``on_audio`` (after aiortc's receive jitter
buffer). A frame is *loud* when some |sample| > 0.01 and *silent* when every
|sample| ≤ 0.003.

Each call runs two phases, one after the other, on one connection:

1. **Turns** (``--turns T``). T questions from the bench's list (call k starts at
   question k). Each is 0.5 s of silence followed by the question. The next question
   starts 0.6 s after the server's ``agent_done`` for the reply. A question with no
   ``agent_done`` 30 s after its end is unanswered; the script then waits (at most
   10 s) for the agent to go quiet and goes on.
2. **Barge-in** (``--bargeins B``). B trials. Each asks for a story (the bench's,
   then others, in turn: the same request again gets a copy of the words heard the
   last time, which the small model may end at once). 1 s
   after the first loud frame of the reply is received, the user says a real
   interruption (no silence added before Piper's own), cycling through the bench's
   list. Then the script waits until the agent is quiet: every reply the server
   started has ended, no loud frame for 0.6 s, and at least 2 s since the
   interruption ended (at most 30 s).

With ``--echo-gain G --echo-delay-ms D`` every call is a caller without echo
cancellation on a loudspeaker: what it receives comes back into its microphone G
times as loud, D ms later, mixed with what it says (``EchoDevice``, a pure delay: no
room, no noise). The server's own echo canceller is what stands between the agent and
its voice then.

With ``--calls N`` the N calls run at once. Call k starts after its own random delay
of 0–500 ms (seeded), so the calls overlap without speaking in lockstep. A call the
server refuses with 503 is counted in ``refused`` and measures nothing.

Figures, over every call:

- ``v2v_ms`` {p50, p95}: for each answered question, the wall time the frame holding
  the question's last loud sample was sent → the first loud frame received after it.
- ``server_v2v_ms`` {p50, p95}: the server's own figure for the same replies
  (``turn_latency.v2v_ms``). It runs from the VAD's end of speech, on the server's
  clock of arrival, to the first reply sample handed to the outgoing track.
- ``breakdown_ms``: medians of the answered replies' ``turn_latency.breakdown_ms``
  spans (asr_final, endpoint, llm_first_token, tts_first_audio, audio_out; each
  measured from the previous mark). ``transport``: the median of v2v_ms − server_v2v_ms
  over those replies. That is what the server cannot see: Opus both ways, aiortc's
  receive jitter buffers (4 frames of prefetch each way), the loopback network,
  event-loop delays, and the difference between the last loud sample and the VAD's
  estimate of the end of speech.
- ``downlink_ms``: the median of (the reply's first loud frame received − its
  ``turn_latency`` event received). The server sends that event on the data channel
  as it hands the first loud sample to the track. The data channel has no jitter
  buffer, so this is roughly the audio's own way down: pacing, Opus, the receive
  jitter buffer and decoding. ``transport`` − ``downlink_ms`` is then roughly the way
  up plus the VAD's estimate.
- ``reply_audio_s`` {p50, p95}: per answered reply, the seconds of loud frames received
  from its first loud frame to its ``agent_done``; ``reply_words`` {p50, p95}: the
  words of its ``agent_done`` text (what the caller heard). An agent that cuts itself
  off on its own echo shows here.
- ``turns`` {asked, answered}. A question is answered when an ``agent_done`` with text
  arrives, within the timeout, for a reply whose ``user_turn`` arrived after the
  question started.
- ``audio_gaps`` {replies_with_gap, max_gap_ms}: answered replies whose
  ``agent_done.gap_ms`` > 0. The server counts that silence when a reply had started
  playing and had nothing queued before it was done (synthesis fell behind).
- ``receive_stalls`` {count, in_replies, max_ms}: holes of ≥ 100 ms between the
  arrivals of consecutive frames. The server sends a frame every 20 ms, silence
  included, so such a hole is audio a listener's playout would run out of.
  ``in_replies`` counts the holes that began while an answered reply was playing
  (from its first loud frame to its ``agent_done``). The pauses between the agent's
  sentences are frames of silence, not holes, so they are not counted here.
- ``bargein_stop_ms`` {p50, p95}: for each barge-in trial, from the wall time the
  interruption's first loud sample was sent to the first silent frame received after
  it that starts a silent run lasting until the interruption's last loud sample was
  sent (and at least 300 ms). In other words, the agent went quiet and stayed quiet
  while the user spoke over it. Trials where it never did have no figure.
- ``interruptions_stopped``: the fraction of trials whose story reply (the last reply
  whose audio had started before the interruption) got an ``interrupted`` event.
  ``bargeins``: the trials counted. ``bargeins_void``: trials left out of both
  figures because the story reply had already ended (its ``agent_done`` arrived)
  before the interruption began: nothing was left to stop. The small model sometimes
  answers a repeated request with just the words of its earlier, interrupted answer
  (the history holds only what was heard), which can end within a second.
- ``calls``, ``refused`` (503), ``failed`` (other errors, listed in ``errors``).
- ``cpu_util``: the machine's CPU utilization over the run, from ``/proc/stat``, as a
  fraction (0–1) of all cores. The server and this client share the machine when
  both run on it. ``client_cpu_util``: this process's share of it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr
from percentiles import p50_p95

from voxline.clients.echo_device import EchoDevice
from voxline.clients.webrtc_client import CallClient, CallRefusedError
from voxline.errors import VoxlineError
from voxline.stream.webrtc.call import WEBRTC_RATE_HZ
from voxline.testing.speech_synth import synthesize

FloatAudio = npt.NDArray[np.float32]

SYNTH_RATE_HZ = 16000
LOUD = 0.01
SILENT = 0.003
LEAD_SILENCE_S = 0.5
TURN_TIMEOUT_S = 30.0
GAP_AFTER_REPLY_S = 0.6
SETTLE_TIMEOUT_S = 10.0
BARGE_DELAY_S = 1.0
BARGE_QUIET_S = 0.6
BARGE_SETTLE_S = 2.0
MIN_STOP_RUN_S = 0.3
STALL_S = 0.1
FRAME_S = 0.02
MAX_START_DELAY_S = 0.5
CONNECT_TIMEOUT_S = 20.0
MORE_STORIES = (
    "Tell me a long story about a pirate ship in a storm.",
    "Tell me a long story about a robot who learns to paint.",
    "Tell me a long story about a lost puppy in a big city.",
)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One thing the user says: 48 kHz samples and where its loud part starts and ends."""

    text: str
    audio: FloatAudio
    first_loud: int
    last_loud: int

    @classmethod
    def speak(cls, text: str, lead_silence_s: float = 0.0) -> Utterance:
        """``text`` spoken by Piper at 16 kHz, resampled to 48 kHz, after ``lead_silence_s`` of silence."""
        return cls.recorded(text, synthesize(text, SYNTH_RATE_HZ), lead_silence_s)

    @classmethod
    def recorded(cls, text: str, audio_16k: FloatAudio, lead_silence_s: float = LEAD_SILENCE_S) -> Utterance:
        """A test-set clip (16 kHz) said as one turn, resampled to 48 kHz, after ``lead_silence_s``."""
        speech = soxr.resample(audio_16k, SYNTH_RATE_HZ, WEBRTC_RATE_HZ).astype(np.float32)
        audio = np.concatenate([np.zeros(int(lead_silence_s * WEBRTC_RATE_HZ), np.float32), speech])
        loud = np.flatnonzero(np.abs(audio) > LOUD)
        if not len(loud):
            raise VoxlineError(f"nothing audible to say for {text!r}")
        return cls(text, audio, int(loud[0]), int(loud[-1]))


@dataclass(frozen=True, slots=True)
class Spoken:
    """When an utterance went out: wall times its first and last loud samples were sent."""

    onset: float
    end: float


class ScriptedMicrophone:
    """The caller's microphone: ``read(n)`` gives the utterance being said, else silence.

    The call's track calls ``read`` on the event loop every 20 ms; ``say`` queues an
    utterance (one at a time) and returns a future that resolves to its ``Spoken``
    times once the last sample went out.
    """

    def __init__(self) -> None:
        self._said: Utterance | None = None
        self._position = 0
        self._onset = 0.0
        self._end = 0.0
        self._done: asyncio.Future[Spoken] | None = None

    def say(self, utterance: Utterance) -> asyncio.Future[Spoken]:
        """Start saying ``utterance`` at the next frame; the future resolves when it is out."""
        if self._said is not None:
            raise VoxlineError("the microphone is still saying something else")
        self._said, self._position = utterance, 0
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    def read(self, n_samples: int) -> FloatAudio:
        """The next ``n_samples`` (48 kHz float32) the user says."""
        chunk = np.zeros(n_samples, np.float32)
        said = self._said
        if said is None:
            return chunk
        now = time.monotonic()
        start = self._position
        part = said.audio[start : start + n_samples]
        chunk[: len(part)] = part
        if start <= said.first_loud < start + n_samples:
            self._onset = now
        if start <= said.last_loud < start + n_samples:
            self._end = now
        self._position += n_samples
        if self._position >= len(said.audio):
            self._said = None
            if self._done is not None and not self._done.done():
                self._done.set_result(Spoken(self._onset, self._end))
        return chunk


class CallLog:
    """What one call received: each frame's arrival time and peak, and the server's events.

    ``until`` waits for a condition on it, woken by every frame and event.
    """

    def __init__(self) -> None:
        self.frame_at: list[float] = []
        self.frame_peak: list[float] = []
        self.last_loud_at = 0.0
        self.turn_at: dict[int, float] = {}
        self.turn_text: dict[int, str] = {}
        self.audio_started_at: dict[int, float] = {}
        self.latency: dict[int, dict[str, Any]] = {}
        self.done: dict[int, dict[str, Any]] = {}
        self.done_at: dict[int, float] = {}
        self.ended: set[int] = set()
        self.interrupted: set[int] = set()
        self.user_finals: list[str] = []
        self.hung_up = False
        self._changed = asyncio.Event()

    def on_audio(self, samples: FloatAudio) -> None:
        """``CallClient``'s ``on_audio``: note the frame's arrival and loudness."""
        now = time.monotonic()
        peak = float(np.abs(samples).max(initial=0.0))
        self.frame_at.append(now)
        self.frame_peak.append(peak)
        if peak > LOUD:
            self.last_loud_at = now
        self._changed.set()

    def on_event(self, event: dict[str, Any]) -> None:
        """One server event, noted by its reply id."""
        now, kind, reply = time.monotonic(), event.get("type"), event.get("reply")
        if kind == "user_final":
            self.user_finals.append(str(event.get("text", "")))
        elif isinstance(reply, int):
            if kind == "user_turn":
                self.turn_at[reply] = now
                self.turn_text[reply] = str(event.get("text", ""))
            elif kind == "turn_latency":
                self.latency[reply] = event
                self.audio_started_at[reply] = now
            elif kind == "agent_done":
                self.done[reply], self.done_at[reply] = event, now
                self.ended.add(reply)
            elif kind in ("interrupted", "reply_discarded"):
                self.ended.add(reply)
                if kind == "interrupted":
                    self.interrupted.add(reply)
        self._changed.set()

    async def read_events(self, client: CallClient) -> None:
        """Note the call's events until it ends (then ``hung_up`` is set)."""
        try:
            async for event in client.events():
                self.on_event(event)
        finally:
            self.hung_up = True
            self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``condition()`` holds (True), the call ends or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._changed.clear()
            if condition():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.hung_up:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def answer_since(self, started: float) -> int | None:
        """The first reply with text done whose turn arrived after ``started``."""
        replies = [r for r, at in self.turn_at.items() if at >= started and r in self.done]
        replies = [r for r in replies if self.done[r].get("text")]
        return min(replies) if replies else None

    def quiet(self, since: float, settle_s: float) -> bool:
        """No reply in flight, no loud frame for ``BARGE_QUIET_S`` and ``settle_s`` past ``since``."""
        now = time.monotonic()
        return (
            now - since >= settle_s
            and now - self.last_loud_at >= BARGE_QUIET_S
            and not set(self.turn_at) - self.ended
        )

    def first_loud_after(self, at: float) -> float | None:
        """Arrival time of the first loud frame received at or after ``at``."""
        for i in range(bisect.bisect_left(self.frame_at, at), len(self.frame_at)):
            if self.frame_peak[i] > LOUD:
                return self.frame_at[i]
        return None

    def stop_after(self, onset: float, speech_end: float) -> float | None:
        """The first silent frame after ``onset`` opening a run with no loud frame until
        ``speech_end`` and for at least ``MIN_STOP_RUN_S`` (its arrival time)."""
        run: float | None = None
        for i in range(bisect.bisect_left(self.frame_at, onset), len(self.frame_at)):
            at, peak = self.frame_at[i], self.frame_peak[i]
            if peak > LOUD:
                run = None
            elif peak <= SILENT and run is None:
                run = at
            if run is not None and at >= max(speech_end, run + MIN_STOP_RUN_S):
                return run
        return None

    def onsets_between(self, start: float, end: float) -> int:
        """Loud frames received in [start, end] whose previous frame was not loud: the agent
        starting to talk (a cut-in when the caller is speaking then)."""
        count = 0
        first = bisect.bisect_left(self.frame_at, start)
        for i in range(first, len(self.frame_at)):
            if self.frame_at[i] > end:
                break
            if self.frame_peak[i] > LOUD and (i == 0 or self.frame_peak[i - 1] <= LOUD):
                count += 1
        return count

    def loud_s_between(self, start: float, end: float) -> float:
        """Seconds of loud frames (20 ms each) received in [start, end]."""
        first, last = bisect.bisect_left(self.frame_at, start), bisect.bisect_right(self.frame_at, end)
        return sum(peak > LOUD for peak in self.frame_peak[first:last]) * FRAME_S

    def stalls(self) -> list[tuple[float, float]]:
        """Holes of at least ``STALL_S`` between consecutive frames: (start, seconds)."""
        at = self.frame_at
        return [(a, b - a) for a, b in itertools.pairwise(at) if b - a >= STALL_S]


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """One question: the reply that answered it and the latencies seen on both sides."""

    question: str
    reply: int | None
    v2v_ms: float | None = None
    server_v2v_ms: float | None = None
    breakdown_ms: dict[str, float] = field(default_factory=dict)
    gap_ms: float = 0.0
    downlink_ms: float | None = None
    playing: tuple[float, float] | None = None
    cut_ins: int = 0
    heard: str = ""
    reply_audio_s: float | None = None
    reply_words: int | None = None


@dataclass(frozen=True, slots=True)
class BargeOutcome:
    """One barge-in trial: how long the agent took to go quiet, and whether it was stopped."""

    stop_ms: float | None
    stopped: bool
    void: bool = False  # the story reply had already ended when the user spoke: nothing to stop


@dataclass(slots=True)
class CallReport:
    """Everything one call measured (empty but for ``refused``/``error`` if it never ran)."""

    turns: list[TurnOutcome] = field(default_factory=list)
    barges: list[BargeOutcome] = field(default_factory=list)
    stalls: list[tuple[float, float]] = field(default_factory=list)
    user_finals: list[str] = field(default_factory=list)
    refused: bool = False
    error: str = ""


class ScriptedCall:
    """One caller: connects, runs the turns then the barge-in trials, hangs up."""

    def __init__(
        self, url: str, questions: Sequence[Utterance], stories: Sequence[Utterance],
        interruptions: Sequence[Utterance], echo: EchoDevice | None = None,
    ) -> None:
        self.url = url
        self.echo = echo
        self.questions = questions
        self.stories = stories
        self.interruptions = interruptions
        self.mic = ScriptedMicrophone()
        self.log = CallLog()
        self.report = CallReport()

    async def run(self, start_delay_s: float = 0.0) -> CallReport:
        """The whole call; errors end up in the report. Cancelled midway, it hangs up first."""
        await asyncio.sleep(start_delay_s)
        client = CallClient(self.url, self._microphone, on_audio=self._loudspeaker)
        try:
            await client.connect(CONNECT_TIMEOUT_S)
            events = asyncio.create_task(self.log.read_events(client), name="bench-call-events")
            try:
                for question in self.questions:
                    if self.log.hung_up:
                        break
                    self.report.turns.append(await self._ask(question))
                for interruption in self.interruptions:
                    if self.log.hung_up:
                        break
                    story = self.stories[len(self.report.barges) % len(self.stories)]
                    self.report.barges.append(await self._barge_in(story, interruption))
                if self.log.hung_up:
                    self.report.error = "the server ended the call early"
            finally:
                events.cancel()
                await asyncio.wait({events}, timeout=5.0)
        except CallRefusedError as exc:
            self.report.refused = exc.status == 503
            self.report.error = str(exc)
        except VoxlineError as exc:
            self.report.error = str(exc)
        finally:
            await asyncio.shield(client.close())
        self.report.stalls = self.log.stalls()
        self.report.user_finals = self.log.user_finals
        return self.report

    def _microphone(self, n_samples: int) -> FloatAudio:
        said = self.mic.read(n_samples)
        return said if self.echo is None else self.echo.capture(said)

    def _loudspeaker(self, samples: FloatAudio) -> None:
        self.log.on_audio(samples)
        if self.echo is not None:
            self.echo.play(samples)

    async def _say(self, utterance: Utterance) -> Spoken:
        timeout_s = len(utterance.audio) / WEBRTC_RATE_HZ + 5.0
        try:
            return await asyncio.wait_for(self.mic.say(utterance), timeout_s)
        except TimeoutError as exc:
            raise VoxlineError(f"the microphone track stopped taking audio ({utterance.text!r})") from exc

    async def _ask(self, question: Utterance) -> TurnOutcome:
        log = self.log
        started = time.monotonic()
        spoken = await self._say(question)
        answered = await log.until(lambda: log.answer_since(started) is not None, TURN_TIMEOUT_S)
        cut_ins = log.onsets_between(spoken.onset, spoken.end)
        if not answered:
            await log.until(lambda: log.quiet(spoken.end, 0.0), SETTLE_TIMEOUT_S)
            return TurnOutcome(question.text, None, cut_ins=cut_ins)
        reply = log.answer_since(started)
        assert reply is not None
        await asyncio.sleep(GAP_AFTER_REPLY_S)
        first = log.first_loud_after(spoken.end)
        latency = log.latency.get(reply, {})
        server_v2v = latency.get("v2v_ms")
        latency_at = log.audio_started_at.get(reply)
        done_text = str(log.done[reply].get("text") or "")
        return TurnOutcome(
            question.text, reply,
            v2v_ms=None if first is None else (first - spoken.end) * 1000,
            server_v2v_ms=server_v2v if isinstance(server_v2v, int | float) else None,
            breakdown_ms=dict(latency.get("breakdown_ms") or {}),
            gap_ms=float(log.done[reply].get("gap_ms") or 0.0),
            downlink_ms=None if first is None or latency_at is None else (first - latency_at) * 1000,
            playing=None if first is None else (first, log.done_at[reply]),
            cut_ins=cut_ins, heard=log.turn_text.get(reply, ""),
            reply_audio_s=None if first is None else log.loud_s_between(first, log.done_at[reply]),
            reply_words=len(done_text.split()),
        )

    async def _barge_in(self, story_request: Utterance, interruption: Utterance) -> BargeOutcome:
        log = self.log
        spoken = await self._say(story_request)
        if not await log.until(lambda: log.last_loud_at > spoken.end, TURN_TIMEOUT_S):
            await log.until(lambda: log.quiet(spoken.end, 0.0), SETTLE_TIMEOUT_S)
            return BargeOutcome(None, False)
        first = log.first_loud_after(spoken.end) or log.last_loud_at
        await asyncio.sleep(max(0.0, first + BARGE_DELAY_S - time.monotonic()))
        barge = await self._say(interruption)
        await log.until(lambda: log.quiet(barge.end, BARGE_SETTLE_S), TURN_TIMEOUT_S)
        stop = log.stop_after(barge.onset, barge.end)
        story = [r for r, at in log.audio_started_at.items() if spoken.end <= at <= barge.onset]
        ended_before = bool(story) and log.done_at.get(max(story), float("inf")) <= barge.onset
        return BargeOutcome(
            None if stop is None else (stop - barge.onset) * 1000,
            bool(story) and max(story) in log.interrupted,
            void=ended_before,
        )


def _cpu_times() -> tuple[int, int]:
    """Machine-wide (busy, total) jiffies from ``/proc/stat`` (zeros where there is none)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def summarize(reports: list[CallReport], *, cpu_util: float | None, client_cpu_util: float) -> dict[str, Any]:
    """The JSON figures (see the module docstring) over every call's report."""
    turns = [t for r in reports for t in r.turns]
    answered = [t for t in turns if t.reply is not None]
    spans: dict[str, list[float]] = {}
    for turn in answered:
        for name, ms in turn.breakdown_ms.items():
            spans.setdefault(name, []).append(ms)
    transport = [
        t.v2v_ms - t.server_v2v_ms for t in answered if t.v2v_ms is not None and t.server_v2v_ms is not None
    ]
    breakdown: dict[str, float | None] = {k: round(statistics.median(v), 1) for k, v in spans.items()}
    breakdown["transport"] = round(statistics.median(transport), 1) if transport else None
    downlink = [t.downlink_ms for t in answered if t.downlink_ms is not None]
    gaps = [t.gap_ms for t in answered]
    stalls = [s for r in reports for s in r.stalls]
    in_replies = sum(
        any(t.playing is not None and t.playing[0] <= start <= t.playing[1] for t in r.turns)
        for r in reports for start, _ in r.stalls
    )
    every_barge = [b for r in reports for b in r.barges]
    barges = [b for b in every_barge if not b.void]
    return {
        "v2v_ms": p50_p95([t.v2v_ms for t in answered if t.v2v_ms is not None]),
        "server_v2v_ms": p50_p95([t.server_v2v_ms for t in answered if t.server_v2v_ms is not None]),
        "breakdown_ms": breakdown,
        "downlink_ms": round(statistics.median(downlink), 1) if downlink else None,
        "turns": {"asked": len(turns), "answered": len(answered)},
        "reply_audio_s": p50_p95([t.reply_audio_s for t in answered if t.reply_audio_s is not None]),
        "reply_words": p50_p95([float(t.reply_words) for t in answered if t.reply_words is not None]),
        "cut_ins": sum(t.cut_ins for t in turns),
        "audio_gaps": {"replies_with_gap": sum(g > 0 for g in gaps), "max_gap_ms": max(gaps, default=0.0)},
        "receive_stalls": {
            "count": len(stalls), "in_replies": in_replies,
            "max_ms": round(max((s for _, s in stalls), default=0.0) * 1000, 1),
        },
        "bargein_stop_ms": p50_p95([b.stop_ms for b in barges if b.stop_ms is not None]),
        "interruptions_stopped": round(sum(b.stopped for b in barges) / len(barges), 3) if barges else None,
        "bargeins": len(barges),
        "bargeins_void": len(every_barge) - len(barges),
        "calls": len(reports),
        "refused": sum(r.refused for r in reports),
        "failed": sum(bool(r.error) and not r.refused for r in reports),
        "errors": sorted({r.error for r in reports if r.error}),
        "cpu_util": cpu_util,
        "client_cpu_util": round(client_cpu_util, 3),
    }


async def run_calls(
    url: str, *, calls: int, turns: int, bargeins: int, questions: Sequence[str], story: str,
    interruptions: Sequence[str], seed: int = 0, verbose: bool = False,
    recordings: Sequence[tuple[str, FloatAudio]] = (), echo_gain: float = 0.0, echo_delay_ms: float = 120.0,
) -> dict[str, Any]:
    """Run ``calls`` scripted calls at once against ``url``; the summary of ``summarize``.

    With ``recordings`` ((reference text, 16 kHz audio) of a test set), each call says
    every recording once as one turn (call k starts at recording k) instead of the
    ``questions``; ``turns`` is then ignored. ``echo_gain`` > 0 makes every caller hear
    itself: its received audio returns into its microphone that much louder (a gain),
    ``echo_delay_ms`` later.
    """
    stories = [story, *MORE_STORIES]
    asked = sorted({*(questions[i % len(questions)] for i in range(calls + turns)), *stories})
    said = {text: await asyncio.to_thread(Utterance.speak, text, LEAD_SILENCE_S) for text in asked}
    said |= {text: await asyncio.to_thread(Utterance.speak, text) for text in interruptions}
    clips = [Utterance.recorded(text, audio) for text, audio in recordings]
    rng = random.Random(seed)

    def turns_of(k: int) -> list[Utterance]:
        if clips:
            return [clips[(k + i) % len(clips)] for i in range(len(clips))]
        return [said[questions[(k + i) % len(questions)]] for i in range(turns)]

    scripts = [
        ScriptedCall(
            url,
            turns_of(k),
            [said[text] for text in stories],
            [said[interruptions[i % len(interruptions)]] for i in range(bargeins)],
            echo=EchoDevice(
                delay_ms=echo_delay_ms, gain=echo_gain, reflections=0, noise_dbfs=None, sample_rate_hz=WEBRTC_RATE_HZ,
            ) if echo_gain > 0 else None,
        )
        for k in range(calls)
    ]
    busy0, total0 = _cpu_times()
    process0, wall0 = time.process_time(), time.monotonic()
    async with asyncio.TaskGroup() as group:
        runs = [group.create_task(s.run(rng.uniform(0.0, MAX_START_DELAY_S))) for s in scripts]
    busy1, total1 = _cpu_times()
    wall_s = time.monotonic() - wall0
    reports = [run.result() for run in runs]
    if verbose:
        for k, report in enumerate(reports):
            print(f"call {k}: user finals {report.user_finals}", file=sys.stderr)
            for turn in report.turns:
                print(f"call {k}: turn {turn.heard!r} v2v {turn.v2v_ms} cut-ins {turn.cut_ins}", file=sys.stderr)
            for barge in report.barges:
                print(
                    f"call {k}: barge-in stop {barge.stop_ms} ms, interrupted {barge.stopped}, void {barge.void}",
                    file=sys.stderr,
                )
    result = summarize(
        reports,
        cpu_util=round((busy1 - busy0) / (total1 - total0), 3) if total1 > total0 else None,
        client_cpu_util=(time.process_time() - process0) / wall_s / (os.cpu_count() or 1),
    )
    result["wall_s"] = round(wall_s, 1)
    return result
