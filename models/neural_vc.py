"""The neural plug-in slot: a user's own streaming voice-conversion model, TorchScript or ONNX.

The contract (README, "Voice conversion: bring your own model"):

- the model is a function ``(audio[B, C], state[B, S]) -> (audio_out[B, C], new_state[B, S])``,
  all float32, where ``C`` is its chunk size and ``S`` its state size; it is causal
  (an output sample depends on input up to the same position) and carries everything
  it needs between chunks in ``state``, which starts at zeros;
- beside ``model.pt2`` (``torch.export.save``, batch dimension dynamic), ``model.pt``
  (TorchScript, ``torch.jit.save``; deprecated by torch but still common) or
  ``model.onnx`` (batch dimension dynamic) lies
  ``model.json``: ``{"sample_rate_hz": 16000, "chunk_samples": 160, "state_size": 64,
  "latency_samples": 0}``. ``latency_samples`` is the model's own delay: output sample
  ``k`` of a chunk belongs to input sample ``k - latency_samples``.

voxline does the rest: framing (any chunk sizes in, whole model chunks to the model),
batching (the chunks of every session due in one engine call go through the model
together, ``B`` sessions at once), resampling (the session's graph converts to
``sample_rate_hz``) and latency accounting: ``NeuralConverter`` returns exactly as
many samples as it was given, delayed by ``latency_samples = C - 1 + model latency``,
so its output is sample-aligned with its input once that delay is taken off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from voxline.errors import ConfigError, EngineError
from voxline.sample_fifo import SampleFifo

from .voice_converter import VoiceParams, convert_stream

__all__ = ["ModelCard", "NeuralConverter", "NeuralState"]

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelCard:
    """The ``model.json`` beside a model: its rate, chunk, state size and own delay."""

    sample_rate_hz: int
    chunk_samples: int
    state_size: int
    latency_samples: int = 0

    @classmethod
    def read(cls, model_path: Path) -> ModelCard:
        """Read the card next to ``model_path`` (same name, ``.json``).

        Raises:
            ConfigError: the card is missing, not JSON, or a field is missing or not a
                whole number in range.
        """
        card_path = model_path.with_suffix(".json")
        try:
            raw = json.loads(card_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{card_path} is missing: a model needs its card (README: bring your own model)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {card_path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{card_path} must hold a JSON object")
        values = {}
        for name, low, high in (("sample_rate_hz", 8000, 48000), ("chunk_samples", 1, 48000),
                                ("state_size", 0, 1 << 24), ("latency_samples", 0, 48000)):
            value = raw.get(name, 0 if name == "latency_samples" else None)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{card_path}: {name} must be a whole number in {low}..{high}, not {value!r}")
            values[name] = value
        return cls(**values)


MAX_BUFFERED_SAMPLES = 2 * 48000
"""Each way, a stream holds under a model frame plus a chunk; past this (2 s) the oldest go."""


@dataclass(slots=True, eq=False)
class NeuralState:
    """One session's stream through a user's model: its state tensor and the framing buffers."""

    params: VoiceParams
    model_state: FloatAudio
    pending_in: SampleFifo = field(default_factory=lambda: SampleFifo(MAX_BUFFERED_SAMPLES))
    ready_out: SampleFifo = field(default_factory=lambda: SampleFifo(MAX_BUFFERED_SAMPLES))


class NeuralConverter:
    """A user's streaming model behind the engine's ``StreamingConverter`` contract.

    ``path`` is a ``.pt2`` exported program, a ``.pt``/``.ts`` TorchScript file or an
    ``.onnx`` file with its ``.json`` card beside it. ``device`` applies to the torch
    formats (ONNX runs on onnxruntime's CPU provider). ``params`` are kept for the client's view; the model
    decides what its voice is.
    """

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"no model at {self.path}")
        self.card = ModelCard.read(self.path)
        self.sample_rate_hz = self.card.sample_rate_hz
        self.chunk_samples = self.card.chunk_samples
        self.latency_samples = self.card.chunk_samples - 1 + self.card.latency_samples
        self.device = torch.device(device)
        self._run = self._load()

    def _load(self) -> Any:
        suffix = self.path.suffix.lower()
        try:
            if suffix in (".pt2", ".pt", ".ts", ".torchscript"):
                if suffix == ".pt2":
                    module = torch.export.load(str(self.path)).module().to(self.device)
                else:
                    module = torch.jit.load(str(self.path), map_location=self.device).eval()

                def run_torch(audio: FloatAudio, state: FloatAudio) -> tuple[FloatAudio, FloatAudio]:
                    with torch.inference_mode():
                        out, new_state = module(torch.from_numpy(audio).to(self.device),
                                                torch.from_numpy(state).to(self.device))
                    return out.float().cpu().numpy(), new_state.float().cpu().numpy()

                return run_torch
            if suffix == ".onnx":
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
                names = [i.name for i in session.get_inputs()]
                if len(names) != 2 or len(session.get_outputs()) != 2:
                    raise ConfigError(f"{self.path}: an ONNX model needs 2 inputs (audio, state) and 2 outputs")

                def run_onnx(audio: FloatAudio, state: FloatAudio) -> tuple[FloatAudio, FloatAudio]:
                    out, new_state = session.run(None, {names[0]: audio, names[1]: state})
                    return np.asarray(out, np.float32), np.asarray(new_state, np.float32)

                return run_onnx
        except ConfigError:
            raise
        except Exception as exc:  # torch.jit and onnxruntime raise assorted types for bad files
            raise ConfigError(f"cannot load the model {self.path}: {exc}") from exc
        raise ConfigError(f"{self.path}: a model is a .pt2 (torch.export), a TorchScript .pt or an .onnx file")

    def new_state(self, params: VoiceParams | None = None) -> NeuralState:
        """A fresh session: zero state; ``chunk_samples - 1`` samples of silence ahead of its output."""
        state = NeuralState(params or VoiceParams(), np.zeros(self.card.state_size, np.float32))
        state.ready_out.write(np.zeros(self.chunk_samples - 1, np.float32))
        return state

    def process(self, states: Sequence[NeuralState], chunks: Sequence[FloatAudio]) -> list[FloatAudio]:
        """Frame each session's input into model chunks, run them batched, return as many samples as given."""
        for state, chunk in zip(states, chunks, strict=True):
            state.pending_in.write(chunk)
        size = self.chunk_samples
        while True:
            due = [s for s in states if len(s.pending_in) >= size]
            if not due:
                break
            audio = np.stack([s.pending_in.read(size) for s in due])
            model_state = np.stack([s.model_state for s in due])
            out, new_state = self._run(audio, model_state)
            if out.shape != audio.shape or new_state.shape != model_state.shape:
                raise EngineError(
                    f"{self.path.name} returned audio {tuple(out.shape)} and state {tuple(new_state.shape)}; "
                    f"the contract is {tuple(audio.shape)} and {tuple(model_state.shape)}"
                )
            for i, state in enumerate(due):
                state.ready_out.write(out[i])
                state.model_state = np.ascontiguousarray(new_state[i])
        return [state.ready_out.read(len(chunk)) for state, chunk in zip(states, chunks, strict=True)]

    def convert(self, audio: FloatAudio, params: VoiceParams | None = None, *, chunk_ms: float = 20.0) -> FloatAudio:
        """Convert a whole recording as a stream of ``chunk_ms`` chunks; same length, aligned."""
        return convert_stream(self, audio, params, chunk_ms=chunk_ms)

