"""The voice-agent recipe: audio in → [echo canceller] → VAD → ASR → conversation; speech out.

``AgentEngines`` holds the process-wide models (the caption engines plus the LLM and
the TTS); ``build_agent_session`` wires one session:

    audio in ─ resample 16 kHz ─ echo cancel ─ VAD ─ streaming ASR ─ conversation
                                      ▲                                  │
                                      └──── reference ◄── pull() ◄── VoiceAgent

A transport pushes the user's audio into ``audio_in`` and calls ``pull`` every 20 ms
(real-time pace) for the agent's audio; what ``pull`` returns is also fed, resampled
to 16 kHz, to the echo canceller as its far-end reference, so the agent's own voice
coming back through the user's speakers is removed before the VAD can hear it.
Events for the client come from ``events``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from voxline.allocator import LoadGrowth
from voxline.config import Config
from voxline.errors import ConfigError
from voxline.models.llm import LlamaEngine
from voxline.models.tts import PiperEngine
from voxline.resampler import StreamResampler

from ..agent.barge_in import BargeInSettings, backchannel_phrases
from ..agent.history import History
from ..agent.turn_taking import TurnWaits
from ..agent.voice_agent import AgentSettings, VoiceAgent
from ..edge import Edge
from ..engines import ChatEngine, TurnEndModel
from ..event_channel import EventChannel, unknown_client_event
from ..graph import Graph
from ..stage import Stage
from ..stages.conversation import ConversationStage
from ..stages.resample import ResampleStage
from .captioner import CaptionEngines, make_asr_stage, make_vad_stage

FloatAudio = npt.NDArray[np.float32]
LISTEN_RATE_HZ = 16000
AGENT_LATE_TAIL_MS = 500.0
"""An agent session's final waits this long past the VAD's stop when the words heard at
the pause end no sentence. Whisper writes the period once it has heard the silence
after a phrase, and the end of turn reads that period as complete (the short wait, not
the unsure one). On the real set in-process: v2v p50 520-600 ms with it, 720 ms without.
Captions need no period and do not wait (their WER was the same either way)."""


def load_chat_engine(config: Config) -> ChatEngine:
    """The LLM the config names: embedded llama.cpp (default) or a remote OpenAI-compatible server."""
    llm = config.llm
    if llm.backend == "embedded":
        draft = None if llm.draft in ("", "none") else llm.draft
        return LlamaEngine(
            llm.model or None, n_threads=llm.n_threads, n_threads_batch=llm.n_threads_batch, n_ctx=llm.n_ctx,
            slots=llm.slots, workers=llm.workers, draft=draft,
        )
    if llm.backend == "remote":
        if not llm.base_url:
            raise ConfigError("llm.backend = 'remote' needs llm.base_url (e.g. http://127.0.0.1:8080/v1)")
        from voxline.models.remote_llm import OpenAIChatEngine

        return OpenAIChatEngine.from_env(
            llm.base_url, llm.model, llm.api_key_env, timeout_s=llm.timeout_s, max_concurrent=llm.max_concurrent
        )
    raise ConfigError(f"llm.backend must be 'embedded' or 'remote', not {llm.backend!r}")


def load_turn_model(config: Config) -> TurnEndModel | None:
    """The audio end-of-turn model the config names (``smart-turn``), or None (``none``)."""
    name = config.agent.turn_model
    if name == "none":
        return None
    if name == "smart-turn":
        from voxline.models.turn_model import SmartTurnEngine

        return SmartTurnEngine()
    raise ConfigError(f"agent.turn_model must be 'smart-turn' or 'none', not {name!r}")


def agent_settings(config: Config) -> AgentSettings:
    """The per-session agent settings from the config's ``agent`` section."""
    agent = config.agent
    extra = tuple(p.strip() for p in agent.extra_backchannels.split(",") if p.strip())
    return AgentSettings(
        system_prompt=agent.system_prompt,
        max_reply_tokens=agent.max_reply_tokens,
        history_tokens=agent.history_tokens,
        waits=TurnWaits(
            complete_wait_ms=agent.complete_wait_ms, unsure_wait_ms=agent.unsure_wait_ms,
            incomplete_wait_ms=agent.incomplete_wait_ms,
        ),
        barge_in=BargeInSettings(
            min_speech_ms=0.0,  # the agent's VAD opens speech only after agent.bargein_min_speech_ms
            max_backchannel_ms=agent.max_backchannel_ms,
            backchannels=backchannel_phrases(extra),
        ),
    )


@dataclass(slots=True)
class AgentEngines:
    """The models every agent session of a process shares."""

    captions: CaptionEngines
    llm: ChatEngine
    tts: PiperEngine
    config: Config
    owns_captions: bool = True
    turn_model: TurnEndModel | None = None
    loaded_mb: dict[str, float] = field(default_factory=dict)
    """Resident memory each engine added while it loaded (MB), for ``/healthz``."""

    @classmethod
    async def load(cls, config: Config | None = None, captions: CaptionEngines | None = None) -> AgentEngines:
        """Load VAD, ASR (unless ``captions`` are shared in), LLM and TTS and start their workers.

        A failure closes what this call started. Engines passed in as ``captions`` stay
        open on ``close``: their owner (e.g. the caption service) releases them.
        """
        config = config or Config()
        owns_captions = captions is None
        if captions is None:
            captions = await CaptionEngines.load(config.asr, config.vad)
        tts = PiperEngine(config.tts.voice or None, workers=config.tts.workers, cpu_threads=config.tts.cpu_threads)
        growth = LoadGrowth()
        try:
            turn_model = load_turn_model(config)
            growth.took("turn")
            llm = load_chat_engine(config)
            await llm.start()
            growth.took("llm")
            await tts.start()
            growth.took("tts")
        except BaseException:
            if owns_captions:
                await captions.close()
            await tts.close()
            raise
        return cls(
            captions=captions, llm=llm, tts=tts, config=config, owns_captions=owns_captions, turn_model=turn_model,
            loaded_mb=growth.mb,
        )

    async def close(self) -> None:
        """Stop every engine this object owns. Idempotent."""
        await self.tts.close()
        await self.llm.close()
        if self.owns_captions:
            await self.captions.close()


class EchoReference:
    """Feeds what the agent played, resampled to 16 kHz, to an echo canceller as its reference."""

    def __init__(self, canceller: object, played_rate_hz: int) -> None:
        self.canceller = canceller
        self._resampler = StreamResampler(played_rate_hz, LISTEN_RATE_HZ)

    def __call__(self, played: FloatAudio) -> None:
        """Take one frame as it went to the speaker."""
        out = self._resampler.process(played)
        if len(out):
            self.canceller.add_reference(np.ascontiguousarray(out, dtype=np.float32))  # type: ignore[attr-defined]


@dataclass(slots=True)
class AgentSession:
    """One session's graph, its input edge, its agent (``pull``, ``events``)."""

    graph: Graph
    audio_in: Edge
    agent: VoiceAgent
    events: EventChannel

    @property
    def output_rate_hz(self) -> int:
        """Sample rate of what ``pull`` returns."""
        return self.agent.playout.sample_rate_hz

    def pull(self, n_samples: int) -> FloatAudio:
        """The agent's next ``n_samples`` of audio (call at real-time pace)."""
        return self.agent.pull(n_samples)

    def on_client_event(self, event: dict[str, Any]) -> None:
        """The agent takes no client events yet: each gets an ``error`` event."""
        self.events.publish(unknown_client_event(event, ()))


def build_agent_session(
    engines: AgentEngines,
    *,
    echo_cancel: bool | None = None,
    settings: AgentSettings | None = None,
    name: str = "agent",
    conversation: History | None = None,
    vad_threshold: float | None = None,
) -> AgentSession:
    """Wire one agent session (not started: ``await session.graph.start()``).

    ``echo_cancel`` defaults to the config's ``agent.echo_cancel``; ``conversation``
    is the history to read and write (a fresh ``Conversation`` by default);
    ``vad_threshold`` overrides the VAD's opening threshold.
    """
    config = engines.config
    captions = engines.captions
    echo_cancel = config.agent.echo_cancel if echo_cancel is None else echo_cancel
    events = EventChannel()
    graph = Graph(name)
    resample = ResampleStage(LISTEN_RATE_HZ)
    vad = make_vad_stage(captions, min_speech_ms=config.agent.bargein_min_speech_ms, threshold=vad_threshold)
    asr = make_asr_stage(captions, forward_audio=True, late_tail_ms=AGENT_LATE_TAIL_MS)
    on_played = None
    stages: list[Stage] = [resample]
    if echo_cancel:
        from voxline.models.echo import EchoCanceller

        from ..stages.echo_cancel import EchoCancelStage

        canceller = EchoCanceller()
        stages.append(EchoCancelStage(canceller))
        on_played = EchoReference(canceller, engines.tts.sample_rate_hz)
    agent = VoiceAgent(
        engines.llm, engines.tts, settings or agent_settings(config), events, on_played=on_played,
        turn_model=engines.turn_model, conversation=conversation,
    )
    listener = ConversationStage(agent)
    audio_in = graph.input_to(resample, maxsize=64)
    graph.chain(*stages, vad, asr, listener, maxsize=64)
    return AgentSession(graph=graph, audio_in=audio_in, agent=agent, events=events)
