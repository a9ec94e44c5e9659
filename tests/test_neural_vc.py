"""The neural plug-in slot with real models the tests build, train and export themselves.

Two models, each exported with its ``.json`` card as a torch.export program (``.pt2``),
as TorchScript (``.pt``) and as ONNX:

- a delay line: its state is the last ``D`` input samples, so its output is its input
  ``D`` samples late; through voxline the output must come back equal to the input,
  sample for sample, once voxline has taken the declared latency off;
- a small causal convolution trained here (a few hundred Adam steps) to pre-emphasise
  speech; streamed through voxline in odd-sized chunks, batched with other sessions,
  it must give exactly what the model gives on the whole signal at once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.speech_fixtures import COFFEE, FOX, SAMPLE_RATE_HZ, speech
from voxline.errors import ConfigError, EngineError
from voxline.models.neural_vc import NeuralConverter
from voxline.models.vc_engine import VoiceConverterEngine

CHUNK = 160
DELAY = 37
KERNEL = 24


class DelayLine(torch.nn.Module):
    """Output = input delayed by the state's length."""

    def forward(self, audio: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joined = torch.cat([state, audio], dim=1)
        return joined[:, : audio.shape[1]], joined[:, audio.shape[1] :]


class CausalConv(torch.nn.Module):
    """One causal convolution; the state is the last ``KERNEL - 1`` input samples."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 1, KERNEL, bias=False)

    def forward(self, audio: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joined = torch.cat([state, audio], dim=1)
        out = self.conv(joined[:, None, :])[:, 0, :]
        return out, joined[:, -(KERNEL - 1) :]

    def whole(self, audio: torch.Tensor) -> torch.Tensor:
        """The model on a whole signal at once (zeros before it)."""
        out, _ = self.forward(audio[None, :], torch.zeros(1, KERNEL - 1))
        return out[0]


def export(module: torch.nn.Module, path: Path, state_size: int, latency: int) -> Path:
    """Save ``module`` as ``.pt2``, TorchScript ``.pt`` or ``.onnx`` by ``path``'s suffix, with its card."""
    module.eval()
    example = (torch.zeros(2, CHUNK), torch.zeros(2, state_size))
    if path.suffix == ".pt2":
        sessions = torch.export.Dim("sessions", min=1, max=1024)
        program = torch.export.export(module, example, dynamic_shapes=({0: sessions}, {0: sessions}))
        torch.export.save(program, str(path))
    elif path.suffix == ".pt":
        torch.jit.save(torch.jit.trace(module, example), str(path))
    else:
        axes = {name: {0: "sessions"} for name in ("audio", "state", "audio_out", "new_state")}
        torch.onnx.export(module, example, str(path), input_names=["audio", "state"],
                          output_names=["audio_out", "new_state"], dynamic_axes=axes, dynamo=False)
    card = {"sample_rate_hz": SAMPLE_RATE_HZ, "chunk_samples": CHUNK, "state_size": state_size,
            "latency_samples": latency}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def trained_conv() -> CausalConv:
    torch.manual_seed(0)
    model = CausalConv()
    audio = torch.from_numpy(np.concatenate([speech(FOX), speech(COFFEE)]))
    target = torch.cat([audio[:1], audio[1:] - 0.9 * audio[:-1]])  # pre-emphasis
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimiser.zero_grad()
        loss = torch.mean((model.whole(audio) - target) ** 2)
        loss.backward()
        optimiser.step()
    assert loss.item() < 1e-4, "the model did not learn"
    return model


@pytest.mark.parametrize("suffix", [".pt2", ".pt", ".onnx"])
def test_a_delay_line_comes_back_sample_aligned(tmp_path: Path, suffix: str) -> None:
    path = export(DelayLine(), tmp_path / f"delay{suffix}", state_size=DELAY, latency=DELAY)
    converter = NeuralConverter(path)
    assert converter.latency_samples == CHUNK - 1 + DELAY
    audio = speech(FOX)
    for chunk_ms in (3.0, 20.0, 37.5):
        np.testing.assert_array_equal(converter.convert(audio, chunk_ms=chunk_ms), audio)


@pytest.mark.parametrize("suffix", [".pt2", ".pt", ".onnx"])
async def test_a_trained_model_streams_batched_as_it_runs_whole(
    tmp_path: Path, suffix: str, trained_conv: CausalConv
) -> None:
    path = export(trained_conv, tmp_path / f"emphasis{suffix}", state_size=KERNEL - 1, latency=0)
    engine = VoiceConverterEngine(NeuralConverter(path))
    await engine.start()
    clips = [speech(FOX), speech(COFFEE), speech(FOX)[::-1].copy()]
    try:
        async def stream(audio: np.ndarray, step: int) -> np.ndarray:
            session = engine.open()
            padded = np.concatenate([audio, np.zeros(engine.latency_samples, np.float32)])
            parts = []
            for i in range(0, len(padded), step):
                parts.append(await session.convert(padded[i : i + step]))
                await asyncio.sleep(0)  # let the other sessions' requests join the batch
            return np.concatenate(parts)[engine.latency_samples :]

        outputs = await asyncio.gather(*(stream(c, s) for c, s in zip(clips, (320, 77, 1000), strict=True)))
    finally:
        await engine.close()
    assert max(t.sessions for t in engine.batch_timings) > 1, "sessions were never batched"
    with torch.no_grad():
        for clip, out in zip(clips, outputs, strict=True):
            whole = trained_conv.whole(torch.from_numpy(clip)).numpy()
            np.testing.assert_allclose(out, whole, atol=2e-5)


def test_a_model_without_a_card_or_with_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = export(DelayLine(), tmp_path / "delay.pt", state_size=4, latency=4)
    path.with_suffix(".json").unlink()
    with pytest.raises(ConfigError, match="card"):
        NeuralConverter(path)
    path.with_suffix(".json").write_text(json.dumps({"sample_rate_hz": 16000, "chunk_samples": 0, "state_size": 4}))
    with pytest.raises(ConfigError, match="chunk_samples"):
        NeuralConverter(path)
    with pytest.raises(ConfigError, match="no model"):
        NeuralConverter(tmp_path / "missing.onnx")


async def test_a_model_that_breaks_the_contract_fails_its_sessions_with_a_clear_error(tmp_path: Path) -> None:
    class Halves(torch.nn.Module):
        def forward(self, audio: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return audio[:, ::2], state

    engine = VoiceConverterEngine(NeuralConverter(export(Halves(), tmp_path / "halves.pt", 4, 0)))
    await engine.start()
    try:
        with pytest.raises(EngineError, match="contract"):
            await engine.open().convert(np.zeros(CHUNK, np.float32))
        assert engine.started  # the engine carries on for other sessions
    finally:
        await engine.close()
