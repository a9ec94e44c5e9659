"""``voxline mic --mode vc|anon``: the voice changer or the anonymizer on this computer's audio.

Without ``--url`` the session runs here: the microphone (at the session's input rate)
is pushed into it every 20 ms and what it pulls goes to the speaker, through the same
two small thread-safe rings as the agent's microphone (``clients.agent_mic``). With
``--url`` it runs on a voxline server over WebRTC (``run_mic_call`` with the mode in
the offer). Use headphones: a voice changer on open speakers hears itself.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, TextIO

from voxline.config import Config
from voxline.errors import PipelineError
from voxline.models.voice_params import VoiceParams
from voxline.pipeline.frames import AudioFrame

from .agent_demo import event_printer
from .agent_mic import SampleRing, _sounddevice, _stop_on_ctrl_c, open_devices

FRAME_MS = 20
MODES = {"vc": "voice_changer", "anon": "anonymizer", "agent": "agent"}
"""``--mode`` names and the call modes they stand for."""


async def _open_session(config: Config, mode: str, params: VoiceParams) -> tuple[Any, int, list[Any]]:
    """The session, the rate it listens at, and the engines to close after it."""
    if mode == "vc":
        from voxline.models.vc_engine import VoiceConverterEngine
        from voxline.pipeline.recipes.voice_changer import (
            build_voice_changer_session,
            load_converter,
        )

        engine = VoiceConverterEngine(load_converter(config.vc))
        await engine.start()
        return build_voice_changer_session(engine, params, name="mic-vc"), engine.sample_rate_hz, [engine]
    from voxline.models.tts import PiperEngine
    from voxline.pipeline.recipes.anonymizer import build_anonymizer_session
    from voxline.pipeline.recipes.captioner import CaptionEngines

    captions = await CaptionEngines.load(config.asr, config.vad)
    tts = PiperEngine(config.tts.voice or None, workers=1, cpu_threads=config.tts.cpu_threads)
    try:
        await tts.start()
    except BaseException:
        await captions.close()
        raise
    return build_anonymizer_session(captions, tts, name="mic-anon"), 16000, [tts, captions]


async def run_live_mic(config: Config, mode: str, params: VoiceParams, *, out: TextIO = sys.stdout) -> int:
    """Run the ``mode`` session (``vc`` or ``anon``) on the default microphone and speaker until Ctrl-C."""
    _sounddevice()  # fail before loading models
    session, rate_in, engines = await _open_session(config, mode, params)
    try:
        mic = SampleRing(rate_in, max_s=0.1)
        speaker = SampleRing(session.output_rate_hz, max_s=0.1)
        source, sink = open_devices(mic, speaker, session.output_rate_hz, FRAME_MS, mic_rate_hz=rate_in)
        show = event_printer(out)
        stop = asyncio.Event()
        _stop_on_ctrl_c(stop)
        n_in, n_out = rate_in * FRAME_MS // 1000, session.output_rate_hz * FRAME_MS // 1000
        print(f"{MODES[mode].replace('_', ' ')} on; talk (headphones!), Ctrl-C to stop", file=sys.stderr)
        await session.graph.start()
        try:
            with source, sink:
                pts, start = 0, time.monotonic()
                while not stop.is_set():
                    pts += n_in
                    delay = start + pts / rate_in - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    frame = AudioFrame(mic.read(n_in), rate_in, pts - n_in, time.monotonic())
                    if not session.audio_in.put_nowait(frame) and session.graph.error is not None:
                        raise PipelineError(str(session.graph.error))
                    speaker.write(session.pull(n_out))
                    for event in session.events.drain_nowait():
                        show(event)
        finally:
            await session.graph.cancel()
    finally:
        for engine in engines:
            await engine.close()
    return 0
