"""Voice calls of one server process: agent engines, admission, the live calls, their metrics.

``CallService.start`` loads the agent's models (LLM and TTS; the caption engines are
shared with the caption service) unless calls are off (``server.max_calls = 0``) or
the ``webrtc`` extra is missing, in which case offers get a clear refusal.
A call is one of ``MODES`` (the offer's ``session.mode``): the agent (default), the
voice changer (its converter engine starts with the first such call and is shared
by all of them) or the anonymizer (the caption engines and the agent's Piper).
``open_call`` takes a client's offer and returns the answer; past ``max_calls`` live
calls it refuses with ``CallRefused`` (HTTP 503 and ``Retry-After``), before any work
is done, so the calls already running keep their latency. Each call removes itself
when it ends (peer gone, ICE failed, data channel closed, never connected); ``close``
ends every call and releases the engines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import weakref
from dataclasses import dataclass
from typing import Any

from voxline.config import Config
from voxline.pipeline.recipes.captioner import CaptionEngines
from voxline.pipeline.tasks import wait_for_tasks
from voxline.stream.admission import SessionAdmission
from voxline.stream.sessions.node_bus import NodeBus
from voxline.stream.turn_metrics import TurnLatencyHistograms

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
MAX_SYSTEM_PROMPT_CHARS = 4000
SESSION_OPTIONS = ("mode", "echo_cancel", "system_prompt", "vc")
MODES = ("agent", "voice_changer", "anonymizer")
"""What a call does with the caller's voice: answers it, changes it, or re-speaks its words."""
AGENT_PACKAGES = ("aiortc", "llama_cpp", "piper")


class CallRefused(Exception):
    """An offer the server will not take: HTTP ``status``, a message, maybe ``Retry-After``."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class CallCounters:
    """Calls by outcome since the process started."""

    started: int = 0
    refused_busy: int = 0
    refused_bad_offer: int = 0
    ended: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class CallOffer:
    """A validated offer: the peer's SDP and the session options it asked for."""

    sdp: str
    type: str
    mode: str = "agent"
    echo_cancel: bool | None = None
    system_prompt: str | None = None
    vc: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: Any) -> CallOffer:
        """Check a decoded ``POST /v1/webrtc/offer`` body; ``CallRefused`` (400) names what is wrong."""
        if not isinstance(body, dict):
            raise _bad_offer("the body must be a JSON object with 'sdp' and 'type'")
        sdp, kind = body.get("sdp"), body.get("type")
        if not isinstance(sdp, str) or not sdp.strip():
            raise _bad_offer("'sdp' must be the offer's SDP text")
        if kind != "offer":
            raise _bad_offer(f"'type' must be 'offer', not {kind!r}")
        options = body.get("session") or {}
        if not isinstance(options, dict):
            raise _bad_offer("'session' must be an object")
        unknown = sorted(set(options) - set(SESSION_OPTIONS))
        if unknown:
            raise _bad_offer(f"unknown session option(s) {unknown}; known: {list(SESSION_OPTIONS)}")
        echo = options.get("echo_cancel")
        if echo is not None and not isinstance(echo, bool):
            raise _bad_offer("session.echo_cancel must be true or false")
        prompt = options.get("system_prompt")
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_SYSTEM_PROMPT_CHARS):
            raise _bad_offer(f"session.system_prompt must be text of at most {MAX_SYSTEM_PROMPT_CHARS} characters")
        mode = options.get("mode", "agent")
        if mode not in MODES:
            raise _bad_offer(f"session.mode must be one of {list(MODES)}, not {mode!r}")
        vc = options.get("vc")
        if vc is not None:
            if mode != "voice_changer" or not isinstance(vc, dict):
                raise _bad_offer("session.vc is an object, for mode 'voice_changer'")
            from voxline.errors import ConfigError
            from voxline.models.voice_params import VoiceParams

            try:
                VoiceParams.from_options(vc)
            except ConfigError as exc:
                raise _bad_offer(f"session.vc: {exc}") from exc
        return cls(sdp=sdp, type=kind, mode=mode, echo_cancel=echo, system_prompt=prompt, vc=vc)


def _bad_offer(message: str) -> CallRefused:
    return CallRefused(400, "bad_offer", message)


def missing_agent_packages() -> list[str]:
    """The packages voice calls need that are not installed (empty when calls can run)."""
    return [name for name in AGENT_PACKAGES if importlib.util.find_spec(name) is None]


class CallService:
    """Every voice call of this process, the engines they share, and the limit on them."""

    def __init__(
        self, config: Config, engines: Any = None, admission: SessionAdmission | None = None, bus: NodeBus | None = None
    ) -> None:
        self.config = config
        self.engines = engines
        self._owns_engines = engines is None
        self._missing = ""
        self.calls: set[Any] = set()
        self.reserved = 0
        self.counters = CallCounters()
        self.latency = TurnLatencyHistograms()
        self._watchers: set[asyncio.Task[None]] = set()
        self.peer_connections: weakref.WeakSet[Any] = weakref.WeakSet()  # every one made, for leak checks
        self.converter: Any = None  # the voice changer's engine, made at the first such call
        self.admission = admission  # whose session places calls take too
        self.bus = bus  # where each call's captions go
        self.phone_calls: set[Any] = set()  # live ``PhoneCall``s (telephony endpoints add and remove them)

    async def start(self, captions: CaptionEngines | None) -> None:
        """Load the agent engines beside the shared ``captions`` (unless given, off, or not installed)."""
        if self.engines is not None or self.config.server.max_calls <= 0:
            return
        missing = missing_agent_packages()
        if missing:
            self._missing = f"voice calls need {', '.join(missing)}: pip install 'voxline[webrtc]'"
            log.warning("%s; serving captions only", self._missing)
            return
        from voxline.pipeline.recipes.agent import AgentEngines

        self.engines = await AgentEngines.load(self.config, captions=captions)

    @property
    def unavailable(self) -> str:
        """Why this server takes no calls (empty when it does)."""
        if self.config.server.max_calls <= 0:
            return "voice calls are off on this server (server.max_calls = 0)"
        if self.engines is None:
            return self._missing or "voice calls are not ready"
        return ""

    @property
    def active_calls(self) -> int:
        """Calls live or being set up now."""
        return self.reserved

    def reserve(self) -> None:
        """Hold a place for a session on the agent engines (a call, a Realtime socket); ``CallRefused`` when full.

        Calls and Realtime sessions share ``server.max_calls``; ``release`` gives the place back.
        """
        if self.unavailable:
            raise CallRefused(503, "calls_unavailable", self.unavailable)
        limit = self.config.server.max_calls
        if self.reserved >= limit:
            self.counters.refused_busy += 1
            raise CallRefused(
                503, "server_busy",
                f"the server is at its limit of {limit} live calls and voice sessions; try again in {RETRY_AFTER_S} s",
                retry_after_s=RETRY_AFTER_S,
            )
        self.reserved += 1

    def release(self) -> None:
        """Give back a place taken by ``reserve``."""
        self.reserved -= 1

    def _take_session_place(self) -> None:
        if self.admission is not None and not self.admission.admit():
            self.counters.refused_busy += 1
            raise CallRefused(503, "server_busy", self.admission.refusal, retry_after_s=RETRY_AFTER_S)

    def _give_back(self) -> None:
        self.reserved -= 1
        if self.admission is not None:
            self.admission.release()

    def take_call_place(self) -> None:
        """Hold a call place and a session place for a call (WebRTC, a phone call).

        ``CallRefused`` when either is full or calls are off; ``give_call_place`` returns both.
        """
        self.reserve()
        try:
            self._take_session_place()
        except CallRefused:
            self.reserved -= 1
            raise

    def give_call_place(self) -> None:
        """Give back what ``take_call_place`` held."""
        self._give_back()

    async def open_call(self, offer: CallOffer, owner: str = "", session_id: str | None = None) -> dict[str, str]:
        """Start a call for ``offer`` and return the answer (``sdp``, ``type``, ``session_id``); ``CallRefused`` if not.

        A call takes a session place (``server.max_sessions``, CPU headroom) and a call
        place (``server.max_calls``); its captions (both sides' words) go to the node's
        bus under ``session_id`` (fresh unless given).
        """
        self.take_call_place()
        log_ = self.bus.open("call", owner, session_id) if self.bus is not None else None
        try:
            if offer.mode == "voice_changer" and self.converter is None:
                self.converter = await self._load_converter()
            call = self._new_call(offer, log_)
            self._track(call)
        except BaseException:
            self._give_back()
            if log_ is not None:
                log_.end()
            raise
        try:
            answer = await call.answer(offer.sdp, offer.type)
        except BaseException as exc:
            await call.close()
            self._retire(call)
            self._give_back()
            if log_ is not None:
                log_.end()
            if not isinstance(exc, Exception):  # cancelled: the client went away
                raise
            self.counters.refused_bad_offer += 1
            raise CallRefused(400, "bad_offer", f"the offer could not be answered: {exc}") from exc
        self.counters.started += 1
        self.calls.add(call)
        watcher = asyncio.create_task(self._until_closed(call, log_), name="voxline-call-watch")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return {**answer, "session_id": log_.id} if log_ is not None else answer

    async def _load_converter(self) -> Any:
        from voxline.errors import ConfigError
        from voxline.models.vc_engine import VoiceConverterEngine
        from voxline.pipeline.recipes.voice_changer import load_converter

        try:
            engine = VoiceConverterEngine(load_converter(self.config.vc))
        except ConfigError as exc:
            raise CallRefused(503, "calls_unavailable", f"the voice changer cannot start: {exc}") from exc
        await engine.start()
        return engine

    def _new_call(self, offer: CallOffer, log_: Any) -> Any:
        from voxline.stream.sessions.log import caption_from_agent_event
        from voxline.stream.webrtc.call import VoiceCall

        def on_event(event: dict[str, Any]) -> None:
            self.latency.observe(event)
            if log_ is not None:
                caption = caption_from_agent_event(event)
                if caption is not None:
                    log_.publish(caption)

        server = self.config.server
        return VoiceCall(
            self._new_session(offer), on_event=on_event,
            connect_timeout_s=server.call_connect_timeout_s, media_timeout_s=server.call_media_timeout_s,
        )

    def _new_session(self, offer: CallOffer) -> Any:
        """The live session ``offer.mode`` asks for, on this process's shared engines."""
        if offer.mode == "voice_changer":
            from voxline.models.voice_params import VoiceParams
            from voxline.pipeline.recipes.voice_changer import (
                build_voice_changer_session,
                default_voice,
            )

            params = VoiceParams.from_options(offer.vc or {}, base=default_voice(self.config.vc))
            return build_voice_changer_session(self.converter, params, name="call-vc")
        if offer.mode == "anonymizer":
            from voxline.pipeline.recipes.anonymizer import build_anonymizer_session

            return build_anonymizer_session(self.engines.captions, self.engines.tts, name="call-anon")
        from voxline.pipeline.recipes.agent import agent_settings, build_agent_session

        settings = agent_settings(self.config)
        if offer.system_prompt is not None:
            settings = dataclasses.replace(settings, system_prompt=offer.system_prompt)
        return build_agent_session(self.engines, echo_cancel=offer.echo_cancel, settings=settings, name="call")

    def _track(self, call: Any) -> None:
        self.peer_connections.add(call.pc)
        if self.admission is not None:
            self.admission.metrics.track(call.session.graph)

    def _retire(self, call: Any) -> None:
        """Stop counting an ended call's graph, unless it is (wrongly) still running."""
        graph = call.session.graph
        if graph.running:  # close() cancels it: one still running is a leak, and stays on /healthz
            log.error("call graph %s is still running after its call ended", graph.name)
            return
        if self.admission is not None:
            self.admission.metrics.retire(graph)

    @property
    def open_peer_connections(self) -> int:
        """aiortc peer connections this service made that are not closed yet."""
        return sum(1 for pc in self.peer_connections if pc.connectionState != "closed")

    async def _until_closed(self, call: Any, log_: Any) -> None:
        try:
            await call.closed.wait()
        finally:
            self._retire(call)
            if log_ is not None:
                log_.end()
            self.calls.discard(call)
            self._give_back()
            self.counters.ended += 1
            if call.failure:
                self.counters.failed += 1

    async def close(self) -> None:
        """End every call (awaiting each; phone calls hang up) and release engines this service loaded. Idempotent."""
        calls = list(self.calls)
        if calls:
            await asyncio.gather(*(call.close() for call in calls), return_exceptions=True)
        phones = list(self.phone_calls)  # uvicorn has closed their sockets (1012) by now, unless run otherwise
        if phones:
            await asyncio.gather(*(call.hang_up("the server is stopping") for call in phones), return_exceptions=True)
        await wait_for_tasks(list(self._watchers), 5.0, "call service")
        if self.engines is not None and self._owns_engines:
            await self.engines.close()
            self.engines = None
        if self.converter is not None:
            await self.converter.close()
            self.converter = None
