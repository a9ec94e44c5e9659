"""The ``voxline`` command line: ``serve``, ``caption``, ``demo``, ``mic``, ``vc`` and ``token``.

``voxline serve [--host H] [--port P] [--workers N] [--redis-url URL]`` runs the
HTTP/WebSocket server (captions, and voice calls from the browser page at ``/`` when the
``webrtc`` extra is installed); ``--workers`` processes share the port, ``--redis-url``
shares sessions between processes and machines.
``voxline caption FILE|--mic [--url ws://HOST:PORT] [--realtime|--fast]
[--format text|jsonl|srt|vtt] [--model NAME|PATH]`` captions a file or the
microphone, in this process (default) or through a server (``--url``).
``voxline demo [--question TEXT ...] [--echo] [--out reply.wav] [--plot waterfall.png]``
holds a spoken conversation with the agent headless; ``voxline mic [--url http://HOST:PORT]
[--mode agent|vc|anon]`` talks to it through the microphone and speakers (here, or on a
server over WebRTC), or hears your own voice changed (``vc``) or your words re-spoken
by Piper (``anon``). ``voxline vc IN OUT [--preset NAME] [--semitones S] [--formant F]``
converts a recording through the same streaming voice-change stage.
``voxline token --grant G [--grant G ...] [--ttl SECONDS] [--subject S]`` prints an access
token (one line on stdout) signed with ``VOXLINE_SECRET``; grants are ``publish:ID``,
``publish:*``, ``watch:ID``, ``watch:*``, ``agent`` and ``admin``. With no secret, or a bad
grant, it says why on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from . import __version__
from .config import Config, load_config
from .errors import VoxlineError

FORMATS = ("text", "jsonl", "srt", "vtt")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxline", description="Streaming speech pipeline: live captions and voice agents.")
    parser.add_argument("--version", action="version", version=f"voxline {__version__}")
    parser.add_argument("--config", help="TOML config file (see README: Configuration)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--model", help="ASR model: tiny.en (default), base, or a CTranslate2 model directory")
    serve.add_argument("--max-sessions", type=int, help="refuse new caption sessions past this many")
    serve.add_argument("--max-calls", type=int, help="refuse new voice calls past this many (0: no calls)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default 1)")
    serve.add_argument("--redis-url", help="share sessions between processes and machines (redis://HOST:PORT/DB)")

    caption = sub.add_parser("caption", help="caption an audio file or the microphone")
    source = caption.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="audio file (wav, flac, ogg, mp3, ...)")
    source.add_argument("--mic", action="store_true", help="caption the microphone until Ctrl-C")
    caption.add_argument("--url", help="stream to a voxline server (ws://HOST:PORT) instead of running in-process")
    pace = caption.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send a file at real-time pace, like a live stream")
    pace.add_argument("--fast", action="store_true", help="send a file as fast as it is processed (default)")
    caption.add_argument("--format", choices=FORMATS, default="text", help="output: text (finals), jsonl (every event), srt, vtt")
    caption.add_argument("--model", help="ASR model: tiny.en (default), base, or a CTranslate2 model directory")
    caption.add_argument("--no-progress", action="store_true", help="no progress bar for files")

    demo = sub.add_parser("demo", help="a spoken conversation with the agent, headless (no audio devices)")
    demo.add_argument("--question", action="append", help="what the user says (repeat for several turns)")
    demo.add_argument("--echo", action="store_true", help="feed the agent's voice back into its input, as open speakers would")
    demo.add_argument("--out", default="reply.wav", help="WAV file for the agent's audio (default reply.wav)")
    demo.add_argument("--plot", default="waterfall.png", help="PNG for the latency waterfall (default waterfall.png)")

    mic = sub.add_parser("mic", help="talk to the agent, or hear your voice changed, through the microphone and speakers")
    mic.add_argument("--url", help="call a voxline server (http://HOST:PORT) over WebRTC instead of running it here")
    mic.add_argument("--mode", choices=("agent", "vc", "anon"), default="agent",
                     help="agent (default): converse; vc: your voice changed live; anon: your words re-spoken by Piper")
    _voice_arguments(mic)

    vc = sub.add_parser("vc", help="convert a recording's voice (same length and rate out)")
    vc.add_argument("input", help="audio file to convert (wav, flac, ogg, mp3, ...)")
    vc.add_argument("output", help="file to write (wav, flac or ogg, by its extension)")
    _voice_arguments(vc)
    vc.add_argument("--model", help="your own streaming model (.pt TorchScript or .onnx, with its .json card)")

    token = sub.add_parser("token", help="print an access token signed with VOXLINE_SECRET")
    token.add_argument("--grant", action="append", required=True,
                       help="publish:ID, publish:*, watch:ID, watch:*, agent or admin (repeat for several)")
    token.add_argument("--ttl", type=float, default=600.0, help="seconds until it expires (default 600)")
    token.add_argument("--subject", help="whom the token is for (its sub claim)")
    return parser


def _voice_arguments(parser: argparse.ArgumentParser) -> None:
    from voxline.models.voice_params import PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named voice (default: the config's vc.preset)")
    parser.add_argument("--semitones", type=float, help="pitch shift, -12..12 semitones (after the preset)")
    parser.add_argument("--formant", type=float, help="formant factor, 0.7..1.4: above 1 a smaller voice (after the preset)")
    parser.add_argument("--monotone-hz", type=float, help="speak on one pitch (60..400 Hz): the robot")


def _voice(args: argparse.Namespace, config: Config) -> Any:
    """The voice the command line asks for: preset (or the config's), then single values."""
    from voxline.models.voice_params import VoiceParams
    from voxline.pipeline.recipes.voice_changer import default_voice

    options = {"preset": args.preset, "semitones": args.semitones, "formant": args.formant,
               "monotone_hz": args.monotone_hz}
    return VoiceParams.from_options({k: v for k, v in options.items() if v is not None}, base=default_voice(config.vc))


def _config(args: argparse.Namespace) -> Config:
    server: dict[str, Any] = {}
    bus: dict[str, Any] = {}
    if args.command == "serve":
        server = {"host": args.host, "port": args.port, "max_sessions": args.max_sessions, "max_calls": args.max_calls,
                  "workers": args.workers}
        bus = {"redis_url": args.redis_url}
    if args.command == "vc":
        return load_config(args.config, overrides={"vc": {"model": args.model}})
    return load_config(
        args.config, overrides={"server": server, "bus": bus, "asr": {"model": getattr(args, "model", None)}}
    )


def _token(args: argparse.Namespace, config: Config) -> int:
    """``voxline token``: the token alone on stdout, 0; no secret: a reason on stderr, 2."""
    from voxline.stream.auth import mint_token

    if not config.server.secret:
        print("voxline: no VOXLINE_SECRET is set, so there is nothing to sign a token with", file=sys.stderr)
        return 2
    token = mint_token(config.server.secret, args.grant, args.ttl, subject=args.subject,
                       max_ttl_s=config.server.token_max_ttl_s)
    print(token)
    return 0


async def _caption(args: argparse.Namespace, config: Config) -> int:
    from voxline.clients.audio_files import read_audio
    from voxline.clients.caption_sources import file_chunks, mic_chunks

    progress = None
    if args.mic:
        rate = 16000
        stop = asyncio.Event()
        _stop_on_first_ctrl_c(stop)
        print("listening; Ctrl-C to finish (twice to abort)", file=sys.stderr)
        chunks: AsyncIterator[Any] = mic_chunks(rate, stop=stop)
    else:
        audio = read_audio(args.file)
        rate = audio.sample_rate_hz
        if (not args.no_progress and sys.stderr.isatty()) or (args.format != "text" and not args.no_progress):
            from tqdm import tqdm

            progress = tqdm(total=round(audio.duration_s, 1), unit="s", desc="captioning", file=sys.stderr, leave=False)
        chunks = file_chunks(audio, realtime=args.realtime, on_progress=(lambda s: progress.update(s)) if progress else None)
    if args.url:
        from voxline.clients.caption_client import caption_remote

        events = caption_remote(args.url, chunks, rate)
    else:
        from voxline.clients.caption_runner import caption_locally

        events = caption_locally(chunks, rate, config)
    from voxline.stream.sessions.subtitles import subtitles

    finals: list[dict[str, Any]] = []
    try:
        async for event in events:
            kind = event.get("type")
            if kind == "final":
                finals.append(event)
            if args.format == "jsonl":
                print(json.dumps(event), flush=True)
            elif args.format == "text" and kind == "final" and event.get("text"):
                print(event["text"], flush=True)
    finally:
        if progress is not None:
            progress.close()
    if args.format in ("srt", "vtt"):
        print(subtitles(finals, args.format), end="")
    return 0


def _stop_on_first_ctrl_c(stop: asyncio.Event) -> None:
    """First Ctrl-C ends the microphone (the session drains); a second one aborts."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C is a KeyboardInterrupt

    loop.add_signal_handler(signal.SIGINT, first)


def _call_session(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    """The offer's ``session`` object for ``voxline mic --url --mode ...``."""
    if args.mode == "vc":
        return {"mode": "voice_changer", "vc": _voice(args, config).as_dict()}
    if args.mode == "anon":
        return {"mode": "anonymizer"}
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``voxline`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        if args.command == "serve":
            from voxline.stream.launch.serve import serve

            print(f"voxline {__version__} serving on http://{config.server.host}:{config.server.port}", file=sys.stderr)
            serve(config)
            return 0
        if args.command == "token":
            return _token(args, config)
        if args.command == "demo":
            from voxline.clients.agent_demo import DEFAULT_QUESTIONS, run_demo

            questions = args.question or DEFAULT_QUESTIONS
            asyncio.run(run_demo(config, questions, reply_wav=args.out, waterfall_png=args.plot, echo=args.echo))
            return 0
        if args.command == "vc":
            from voxline.clients.vc_file import convert_file

            summary = asyncio.run(convert_file(args.input, args.output, _voice(args, config), config))
            print(json.dumps(summary))
            return 0
        if args.command == "mic":
            from voxline.clients.agent_mic import run_mic, run_mic_call

            if args.url:
                return asyncio.run(run_mic_call(args.url, session=_call_session(args, config)))
            if args.mode != "agent":
                from voxline.clients.live_mic import run_live_mic

                return asyncio.run(run_live_mic(config, args.mode, _voice(args, config)))
            return asyncio.run(run_mic(config))
        return asyncio.run(_caption(args, config))
    except KeyboardInterrupt:
        return 130
    except VoxlineError as exc:
        print(f"voxline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
