"""Phone calls to a real ``voxline serve``: Twilio media streams beside WebRTC, real speech beside Piper.

Starts one ``voxline serve`` on loopback (embedded defaults: no Redis, no GPU; calls
capped at the largest ``--concurrency``; the CPU-load refusal off, so overload shows
as latency here, not as refusals), or uses ``--url``. Every caller is in this
process: WebRTC callers are ``bench/agent_calls.py``'s aiortc peers, phone callers are
``bench/phone_sim.py``'s simulated carrier speaking Twilio's protocol byte for byte
(20 ms μ-law frames at 8 kHz, real-time pace; its speaker plays what it receives after
``--playout-ms`` of buffering, echoes marks once their audio has played and drops its
queue on ``clear``). Times are ``time.monotonic()`` in this process. Phases, in order:

1. **Turns** on each set of ``--sets`` (``real``: human recordings; ``piper``: the
   bench's questions spoken by Piper; ``bench/speech_sets.py``). Over WebRTC, then over
   Twilio, one call each that says every recording once as a turn (0.5 s of silence
   before each). A WebRTC turn waits for the reply's ``agent_done``; a phone caller has
   no events, so a phone turn waits until the reply has begun playing and nothing loud
   has played for 1.5 s (30 s at most). Per transport:
   ``v2v_ms`` {p50, p95}: the frame holding the recording's last loud sample sent → the
   first loud frame the caller heard (WebRTC: decoded after aiortc's jitter buffer;
   phone: played by the carrier's speaker, so it includes ``--playout-ms``);
   ``v2v_received_ms`` (phone): to the arrival of the first loud media frame instead;
   ``turns`` {asked, answered}; ``cut_ins``: agent audio starting (a loud frame after a
   quiet one) while the recording was still being said. ``twilio_over_webrtc_v2v_p50``
   is the ratio of the two p50s of this run (target ≤ 1.15).
2. **Barge-in** (``--bargeins B``, Twilio, Piper speech, a carrier buffering
   ``--barge-playout-ms`` so what was sent runs well ahead of what was played). Each
   trial is its own call: ask for a story, 1.5 s after the reply began playing say an
   interruption, wait for the agent to go quiet. ``clear_ms`` {p50, p95}: the wall time
   the interruption's first loud sample was sent → the server's ``clear`` arriving
   (target p50 ≤ 150 ms). Then the history is checked word for word: the words the
   session's transcript keeps for the interrupted reply (``interrupted: true``) against
   the words the carrier played before the clear. Those are found by Whisper (tiny.en,
   offline, in this process, after the server has stopped) decoding everything the
   carrier *received* of the reply, with word times: a word was played when it ends
   within the audio the speaker played (so the cut word is judged with the audio after
   it, not at the clip's edge). A trial ``matches`` when the counts differ by at most
   one word (the server places word ends by an estimate good to about a syllable);
   ``word_error`` {p50, max} is kept minus played, in words. ``sent_ahead_s``: audio
   the carrier had received but not played at the clear (what a history cut at "sent"
   would wrongly hold).
3. **Concurrency** (``--concurrency 1,2,4``): that many Twilio calls at once, each
   saying ``--turns-per-call`` recordings of the real set (call k from recording k),
   each call starting after a random 0–500 ms. ``v2v_ms`` per count, and
   ``max_calls_v2v_p95_within_2s``: the largest count up to which every count tried
   kept v2v p95 ≤ 2000 ms with every turn answered.
4. **Narrowband WER** (unless ``--skip-wer``): ``bench/captions.py --json --set
   real,piper --telephone both`` in a subprocess, after the server has stopped; its WER,
   offline WER and final-latency figures at 16 kHz and through 8 kHz μ-law, per set.

The last line of stdout is one JSON object:

    python bench/telephony.py [--sets real,piper] [--bargeins 8] [--concurrency 1,2,4] [--skip-wer]
        [--phases turns,bargein,concurrency,wer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent import INTERRUPTIONS, QUESTIONS, set_recordings
from agent_calls import run_calls
from fanout import free_port
from percentiles import p50_p95
from phone_sim import LOUD, PhoneCaller

from voxline.testing.speech_synth import synthesize

RATE_HZ = 16000
LEAD_SILENCE_S = 0.5
TURN_TIMEOUT_S = 30.0
REPLY_QUIET_S = 1.5
BARGE_AFTER_S = 1.5
BARGE_SETTLE_S = 2.0
MAX_START_DELAY_S = 0.5
V2V_P95_LIMIT_MS = 2000.0
STORY = "Tell me a long story about a brave knight and a dragon."
STORIES = (
    STORY,
    "Tell me a long story about a pirate ship in a storm.",
    "Tell me a long story about a robot who learns to paint.",
    "Tell me a long story about a lost puppy in a big city.",
)


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (how the history check compares text)."""
    return re.findall(r"[a-z0-9']+", text.lower())


# -- the server ------------------------------------------------------------------------------------


async def start_server(port: int, max_calls: int, log_path: Path) -> asyncio.subprocess.Process:
    """``voxline serve`` on ``port``: embedded defaults, ``max_calls`` calls, no CPU-load refusal; stderr to a log."""
    env = {**os.environ, "VOXLINE_SERVER__MAX_CALLS": str(max_calls), "VOXLINE_SERVER__MAX_SESSIONS": "64",
           "VOXLINE_SERVER__MAX_CPU_LOAD": "1.0"}
    voxline = str(Path(sys.executable).with_name("voxline"))
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(voxline, "serve", "--port", str(port), env=env, stderr=log,
                                                    stdout=asyncio.subprocess.DEVNULL)


async def wait_healthy(base: str, node: asyncio.subprocess.Process | None, within_s: float = 300.0) -> None:
    """Return once ``/healthz`` answers 200; raise if the node exits first or it takes longer than ``within_s``."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if node is not None and node.returncode is not None:
                raise RuntimeError(f"voxline serve exited with {node.returncode} before serving")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{base} did not become healthy within {within_s:.0f} s")


async def stop_server(node: asyncio.subprocess.Process) -> None:
    """Terminate ``node`` and wait for it (kill after 20 s)."""
    if node.returncode is None:
        node.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.wait(), 20)
    if node.returncode is None:
        node.kill()
        await node.wait()


async def transcript(base: str, session_id: str) -> list[dict[str, Any]]:
    """The session's finals (``GET /v1/sessions/{id}/transcript``); empty when it has none."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}/v1/sessions/{session_id}/transcript")
    return list(response.json().get("finals", [])) if response.status_code == 200 else []


# -- phone turns -------------------------------------------------------------------------------------


@dataclass(slots=True)
class PhoneTurn:
    """One recording said over the phone: when it was said and what the caller heard after it."""

    text: str
    first_loud_at: float
    last_loud_at: float
    v2v_ms: float | None = None
    v2v_received_ms: float | None = None
    cut_ins: int = 0


@dataclass(slots=True)
class PhoneCallReport:
    """What one phone call measured."""

    turns: list[PhoneTurn] = field(default_factory=list)
    refused: bool = False
    error: str = ""
    underruns: int = 0


def onsets_played(call: PhoneCaller, start: float, end: float) -> int:
    """Agent audio starting (a loud played frame after a quiet one) between two wall times."""
    count, before = 0, False
    for at, audio in call.played:
        loud = bool(np.abs(audio).max() > LOUD)
        if start <= at <= end and loud and not before:
            count += 1
        before = loud
    return count


async def reply_played(call: PhoneCaller, after: float, quiet_s: float = REPLY_QUIET_S) -> float | None:
    """Wait until a reply has begun playing after ``after`` and gone quiet for ``quiet_s``; when it began (or None)."""
    deadline = time.monotonic() + TURN_TIMEOUT_S
    began = None
    while time.monotonic() < deadline and not call.closed.is_set():
        began = began or call.first_loud_after(after)
        if began is not None and call.quiet_since(began, quiet_s):
            return began
        await asyncio.sleep(0.05)
    return began


async def phone_call(
    ws_base: str, clips: list[tuple[str, np.ndarray]], *, playout_ms: float, start_delay_s: float = 0.0,
) -> PhoneCallReport:
    """One Twilio call saying every clip as a turn (see phase 1); errors end up in the report."""
    await asyncio.sleep(start_delay_s)
    report = PhoneCallReport()
    lead = np.zeros(int(LEAD_SILENCE_S * RATE_HZ), np.float32)
    try:
        async with PhoneCaller(f"{ws_base}/v1/telephony/twilio", "twilio", playout_delay_ms=playout_ms) as call:
            for text, audio in clips:
                if call.closed.is_set():
                    report.refused = call.close_code == 1013
                    report.error = f"the server closed the call ({call.close_code})"
                    break
                said = await call.say(np.concatenate([lead, audio]), RATE_HZ, text)
                began = await reply_played(call, said.last_loud_at)
                received = call.first_loud_received_after(said.last_loud_at)
                report.turns.append(PhoneTurn(
                    text, said.first_loud_at, said.last_loud_at,
                    v2v_ms=None if began is None else (began - said.last_loud_at) * 1000,
                    v2v_received_ms=None if began is None or received is None else (received - said.last_loud_at) * 1000,
                    cut_ins=onsets_played(call, said.first_loud_at, said.last_loud_at),
                ))
            report.underruns = call.underruns
    except OSError as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    return report


def summarize_phone(reports: list[PhoneCallReport]) -> dict[str, Any]:
    """v2v, v2v at arrival, turns answered, cut-ins, refusals over every call."""
    turns = [t for r in reports for t in r.turns]
    return {
        "v2v_ms": p50_p95([t.v2v_ms for t in turns if t.v2v_ms is not None]),
        "v2v_received_ms": p50_p95([t.v2v_received_ms for t in turns if t.v2v_received_ms is not None]),
        "turns": {"asked": len(turns), "answered": sum(t.v2v_ms is not None for t in turns)},
        "cut_ins": sum(t.cut_ins for t in turns),
        "calls": len(reports),
        "refused": sum(r.refused for r in reports),
        "errors": sorted({r.error for r in reports if r.error}),
        "speaker_underruns": sum(r.underruns for r in reports),
    }


def webrtc_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The WebRTC run's figures this bench compares (``bench/agent_calls.py`` names)."""
    keys = ("v2v_ms", "server_v2v_ms", "turns", "cut_ins", "calls", "refused", "failed", "errors")
    return {k: result[k] for k in keys}


async def turns_phase(base: str, ws_base: str, sets: list[str], playout_ms: float) -> dict[str, Any]:
    """Phase 1: each set over WebRTC, then over Twilio; the ratio of their v2v p50s."""
    out: dict[str, Any] = {}
    for name in sets:
        clips = await asyncio.to_thread(set_recordings, name)
        webrtc = await run_calls(base, calls=1, turns=0, bargeins=0, questions=QUESTIONS, story=STORY,
                                 interruptions=INTERRUPTIONS, recordings=clips)
        twilio = summarize_phone([await phone_call(ws_base, clips, playout_ms=playout_ms)])
        w, t = webrtc["v2v_ms"].get("p50"), twilio["v2v_ms"].get("p50")
        out[name] = {
            "recordings": len(clips), "webrtc": webrtc_figures(webrtc), "twilio": twilio,
            "twilio_over_webrtc_v2v_p50": round(t / w, 3) if w and t else None,
        }
        print(json.dumps({"phase": "turns", "set": name, "webrtc_p50": w, "twilio_p50": t}), file=sys.stderr, flush=True)
    return out


# -- barge-in ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class BargeTrial:
    """One barge-in call: when the caller spoke over the reply, the clear, what was played and kept."""

    story: str
    interruption: str
    began: float | None = None
    barge_at: float | None = None
    cleared_at: float | None = None
    sent_ahead_s: float | None = None
    played_s: float | None = None
    received: np.ndarray | None = None
    kept: str | None = None
    error: str = ""


async def barge_trial(base: str, ws_base: str, story: str, interruption: str, playout_ms: float) -> BargeTrial:
    """One call: a story, an interruption 1.5 s into its playback, the agent quiet again (see phase 2)."""
    trial = BargeTrial(story, interruption)
    session_id = f"bench-phone-{uuid.uuid4().hex[:8]}"
    lead = np.zeros(int(LEAD_SILENCE_S * RATE_HZ), np.float32)
    url = f"{ws_base}/v1/telephony/twilio?session={session_id}"
    async with PhoneCaller(url, "twilio", playout_delay_ms=playout_ms) as call:
        asked = await call.say(np.concatenate([lead, synthesize(story, RATE_HZ)]), RATE_HZ, story)
        trial.began = await reply_played(call, asked.last_loud_at, quiet_s=0.0)
        if trial.began is None:
            trial.error = "the story was never answered"
            return trial
        await asyncio.sleep(max(0.0, trial.began + BARGE_AFTER_S - time.monotonic()))
        barge = await call.say(synthesize(interruption, RATE_HZ), RATE_HZ, interruption)
        trial.barge_at = barge.first_loud_at
        await asyncio.sleep(BARGE_SETTLE_S)
        clear = next((i for i, t in enumerate(call.clears) if t >= barge.first_loud_at), None)
        if clear is None:
            trial.error = "no clear after the interruption"
            return trial
        trial.cleared_at = call.clears[clear]
        trial.played_s = len(call.heard(trial.began, trial.cleared_at)) / 8000
        arrived = call.first_loud_received_after(asked.last_loud_at) or trial.began
        trial.received = np.concatenate([a for _, a in call.received_audio(arrived, trial.cleared_at)])
        trial.sent_ahead_s = round(call.dropped_at_clear[clear] / 8000, 3)
        await reply_played(call, barge.last_loud_at)  # let the answer to the interruption play out
    finals = await transcript(base, session_id)
    cut = [f for f in finals if f.get("speaker") == "agent" and f.get("interrupted")]
    trial.kept = str(cut[0]["text"]) if cut else None
    if trial.kept is None:
        trial.error = "no interrupted agent final in the transcript"
    return trial


async def barge_phase(base: str, ws_base: str, trials: int, playout_ms: float) -> list[BargeTrial]:
    """Phase 2's calls, one after another."""
    out = []
    for i in range(trials):
        out.append(await barge_trial(base, ws_base, STORIES[i % len(STORIES)], INTERRUPTIONS[i % len(INTERRUPTIONS)],
                                     playout_ms))
    return out


async def judge_barges(trials: list[BargeTrial]) -> dict[str, Any]:
    """Decode what each trial played (Whisper, offline) and compare it with what the history kept."""
    from voxline.models.asr import WhisperEngine

    recognizer = WhisperEngine()
    await recognizer.start()
    checked: list[dict[str, Any]] = []
    try:
        for trial in trials:
            if trial.received is None or trial.played_s is None or trial.kept is None:
                continue
            pad_s = 0.5
            pad = np.zeros(round(pad_s * RATE_HZ), np.float32)
            audio = np.concatenate([pad, soxr.resample(trial.received, 8000, RATE_HZ).astype(np.float32), pad])
            hypothesis = await recognizer.transcribe(audio, final=True, deadline=time.monotonic())
            played_s = trial.played_s
            played = words(" ".join(w.text for w in hypothesis.words if w.end_s - pad_s <= played_s))
            received = words(" ".join(w.text for w in hypothesis.words))
            kept = words(trial.kept)
            checked.append({
                "kept": " ".join(kept), "played": " ".join(played), "received": " ".join(received),
                "played_s": round(played_s, 2), "word_error": len(kept) - len(played),
                "matches": bool(kept) and abs(len(kept) - len(played)) <= 1,
            })
    finally:
        await recognizer.close()
    clear_ms = [(t.cleared_at - t.barge_at) * 1000 for t in trials if t.cleared_at and t.barge_at]
    return {
        "trials": len(trials),
        "cleared": len(clear_ms),
        "clear_ms": p50_p95(clear_ms),
        "sent_ahead_s": p50_p95([t.sent_ahead_s for t in trials if t.sent_ahead_s is not None]),
        "history_checked": len(checked),
        "history_matches": sum(c["matches"] for c in checked),
        "word_error": {"p50": float(np.median([c["word_error"] for c in checked])) if checked else None,
                       "max_abs": max((abs(c["word_error"]) for c in checked), default=None)},
        "history": checked,
        "errors": [t.error for t in trials if t.error],
    }


# -- concurrency ------------------------------------------------------------------------------------


async def concurrency_phase(ws_base: str, counts: list[int], turns_per_call: int, playout_ms: float,
                            seed: int) -> dict[str, Any]:
    """Phase 3: ``n`` simultaneous Twilio calls for each count; the largest that keeps v2v p95 ≤ 2 s."""
    clips = await asyncio.to_thread(set_recordings, "real")
    rng = random.Random(seed)
    by_count: list[dict[str, Any]] = []
    for n in counts:
        scripts = [[clips[(k + i) % len(clips)] for i in range(turns_per_call)] for k in range(n)]
        async with asyncio.TaskGroup() as group:
            runs = [group.create_task(phone_call(ws_base, s, playout_ms=playout_ms,
                                                 start_delay_s=rng.uniform(0, MAX_START_DELAY_S))) for s in scripts]
        summary = {"calls_at_once": n, **summarize_phone([r.result() for r in runs])}
        by_count.append(summary)
        print(json.dumps({"phase": "concurrency", "calls": n, "v2v_ms": summary["v2v_ms"]}), file=sys.stderr, flush=True)
        await asyncio.sleep(2.0)
    best = 0
    for summary in by_count:
        p95 = summary["v2v_ms"].get("p95")
        ok = p95 is not None and p95 <= V2V_P95_LIMIT_MS and summary["turns"]["answered"] == summary["turns"]["asked"]
        if not ok:
            break
        best = summary["calls_at_once"]
    return {"runs": by_count, "max_calls_v2v_p95_within_2s": best}


# -- narrowband WER ----------------------------------------------------------------------------------


def narrowband_wer() -> dict[str, Any]:
    """``bench/captions.py --telephone both`` on real and Piper (a subprocess); per set, 16 kHz beside μ-law."""
    script = Path(__file__).with_name("captions.py")
    done = subprocess.run([sys.executable, str(script), "--json", "--set", "real,piper", "--telephone", "both"],
                          capture_output=True, text=True, timeout=3600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": f"captions.py exited {done.returncode}: {done.stderr[-500:]}"}
    out: dict[str, Any] = {}
    for name, entry in json.loads(lines[-1])["sets"].items():
        phone = entry.get("telephone", {})
        out[name] = {
            "wide": {k: entry.get(k) for k in ("wer", "offline_wer", "final_latency_ms")},
            "ulaw_8k": {k: phone.get(k) for k in ("wer", "offline_wer", "final_latency_ms")},
            "delta": entry.get("telephone_delta"),
        }
    return out


# -- the bench ---------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole bench (see module doc)."""
    sets = [s for s in args.sets.split(",") if s]
    if "real" not in sets:
        sets.insert(0, "real")  # real speech is always reported beside the others
    counts = sorted({int(c) for c in args.concurrency.split(",") if c})
    node = None
    base = args.url
    if not base:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        node = await start_server(port, max([*counts, 2]), Path(args.server_log))
    ws_base = base.replace("http", "ws", 1)
    started = time.monotonic()
    phases = {p for p in args.phases.split(",") if p}
    result: dict[str, Any] = {
        "bench": "telephony",
        "carrier": "twilio (bench/phone_sim.py), mu-law 8 kHz",
        "playout_ms": args.playout_ms,
        "barge_playout_ms": args.barge_playout_ms,
    }
    trials = None
    try:
        await wait_healthy(base, node)
        if "turns" in phases:
            result["turns"] = await turns_phase(base, ws_base, sets, args.playout_ms)
        if "bargein" in phases:
            trials = await barge_phase(base, ws_base, args.bargeins, args.barge_playout_ms)
        if "concurrency" in phases:
            result["concurrency"] = await concurrency_phase(ws_base, counts, args.turns_per_call, args.playout_ms,
                                                            args.seed)
    finally:
        if node is not None:
            await stop_server(node)
    if trials is not None:
        result["bargein"] = await judge_barges(trials)
    if "wer" in phases and not args.skip_wer:
        result["narrowband_wer"] = await asyncio.to_thread(narrowband_wer)
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["machine"] = {"cpu_count": os.cpu_count()}
    return result


def main() -> None:
    """The CLI: flags, run, one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="real,piper", help="test sets for the turns phase (real always runs)")
    parser.add_argument("--bargeins", type=int, default=8, help="barge-in trials (one call each)")
    parser.add_argument("--concurrency", default="1,2,4", help="counts of simultaneous phone calls")
    parser.add_argument("--turns-per-call", type=int, default=4, help="real recordings each concurrent call says")
    parser.add_argument("--playout-ms", type=float, default=60.0, help="the simulated carrier's playout buffer")
    parser.add_argument("--barge-playout-ms", type=float, default=500.0, help="the carrier's buffer in barge-in trials")
    parser.add_argument("--phases", default="turns,bargein,concurrency,wer", help="which phases run, in their order")
    parser.add_argument("--skip-wer", action="store_true", help="leave out bench/captions.py's narrowband WER")
    parser.add_argument("--url", default="", help="a running voxline serve (http://HOST:PORT) instead of starting one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-log", default="/tmp/voxline-telephony-bench.log")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
