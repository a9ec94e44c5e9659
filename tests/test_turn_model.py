"""Smart Turn v3.2 on real Piper speech: finished turns score high, cut-off ones low."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from speech_fixtures import COFFEE, TRAIN, silence, speech

from voxline.models.registry import ModelNotFoundError
from voxline.models.turn_model import SmartTurnModel, smart_turn_onnx_path

WEATHER = "Could you tell me what the weather will be like tomorrow?"
STORE = "What time does the store close today?"
# Piper ends these with a falling, final-sounding tone (it reads each as a sentence),
# so these fragments are chosen for a trailing word that no finished turn ends on.
# Measured with 0.2 s of silence after: 0.08 and 0.06 (finished sentences: 0.93-0.99).
TRAILING_MAYBE = "I was thinking that we could maybe"
TRAILING_THE = "And then we went to the"


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel.shared()


def then_pause(audio: np.ndarray, seconds: float = 0.2) -> np.ndarray:
    return np.concatenate([audio, silence(seconds)])


@pytest.mark.parametrize("text", [WEATHER, COFFEE, TRAIN, STORE])
def test_a_finished_sentence_followed_by_a_short_pause_is_a_complete_turn(
    model: SmartTurnModel, text: str
) -> None:
    assert model.probability(then_pause(speech(text))) > 0.7


@pytest.mark.parametrize("fragment", [TRAILING_MAYBE, TRAILING_THE])
def test_a_sentence_left_hanging_on_its_last_word_is_not_a_complete_turn(
    model: SmartTurnModel, fragment: str
) -> None:
    assert model.probability(then_pause(speech(fragment))) < 0.3


@pytest.mark.parametrize("text", [COFFEE, TRAIN])
def test_speech_cut_off_mid_sentence_scores_far_below_the_whole_sentence(
    model: SmartTurnModel, text: str
) -> None:
    whole = speech(text)
    cut = whole[: int(len(whole) * 0.7)]  # mid-sentence, 70 % of the way in
    p_whole = model.probability(then_pause(whole))
    p_cut = model.probability(then_pause(cut))
    # Measured: coffee 0.97 vs 0.06, train 0.98 vs 0.24.
    assert p_whole > 0.7
    assert p_cut < 0.5
    assert p_whole - p_cut > 0.4


def test_short_audio_is_padded_in_front_so_leading_silence_changes_nothing(
    model: SmartTurnModel,
) -> None:
    audio = then_pause(speech(WEATHER))
    assert len(audio) < SmartTurnModel.WINDOW_SAMPLES
    window = model.window(audio)
    assert window.shape == (SmartTurnModel.WINDOW_SAMPLES,)
    assert not window[: -len(audio)].any()
    np.testing.assert_array_equal(window[-len(audio) :], audio)
    padded_by_hand = np.concatenate([silence(3.0), audio])
    assert model.probability(padded_by_hand) == model.probability(audio)


def test_audio_longer_than_eight_seconds_is_judged_on_its_last_eight(
    model: SmartTurnModel,
) -> None:
    audio = np.concatenate([speech(TRAIN), silence(4.0), speech(COFFEE), silence(2.0)])
    audio = then_pause(np.concatenate([audio, speech(WEATHER)]))
    assert len(audio) > SmartTurnModel.WINDOW_SAMPLES
    last = audio[-SmartTurnModel.WINDOW_SAMPLES :].copy()
    assert model.probability(audio) == model.probability(last)
    assert model.probability(np.concatenate([silence(1.0), last])) == model.probability(last)


def test_features_are_whisper_log_mel_as_faster_whisper_computes_them(
    model: SmartTurnModel,
) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    audio = then_pause(speech(WEATHER))
    features = model.log_mel(audio)
    assert features.shape == (80, 800)
    assert features.dtype == np.float32
    assert features.max() - features.min() <= 2.0  # 8 decades of log10, divided by 4
    x = model.window(audio)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    reference = FeatureExtractor(chunk_length=8)(x, padding=0)  # float32 throughout
    np.testing.assert_allclose(features, reference, atol=1e-4)


def test_concurrent_calls_from_threads_agree_with_a_lone_call(model: SmartTurnModel) -> None:
    clips = [then_pause(speech(t)) for t in (WEATHER, TRAILING_MAYBE)] * 3
    alone = [model.probability(c) for c in clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(model.probability, clips))
    assert together == alone


def test_stereo_audio_is_refused(model: SmartTurnModel) -> None:
    with pytest.raises(ValueError, match="mono"):
        model.probability(np.zeros((2, 16000), dtype=np.float32))


def test_the_shared_model_is_one_instance_and_a_given_path_loads_too() -> None:
    assert SmartTurnModel.shared() is SmartTurnModel.shared()
    own = SmartTurnModel(onnx_path=smart_turn_onnx_path())
    audio = then_pause(speech(STORE))
    assert own.probability(audio) == SmartTurnModel.shared().probability(audio)


def test_a_given_path_that_does_not_exist_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "smart-turn.onnx"
    with pytest.raises(ModelNotFoundError, match=r"smart-turn\.onnx"):
        SmartTurnModel(onnx_path=str(missing))


def test_without_pipecat_the_error_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name == "pipecat" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelNotFoundError, match=r"pipecat-ai.*pip install 'voxline\[turn\]'"):
        smart_turn_onnx_path()
    with pytest.raises(ModelNotFoundError, match=r"voxline\[turn\]"):
        SmartTurnModel()


def test_a_pipecat_without_the_model_file_is_reported_as_too_old(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "pipecat").mkdir()
    (tmp_path / "pipecat" / "__init__.py").write_text("")
    fake = importlib.util.spec_from_file_location(
        "pipecat",
        tmp_path / "pipecat" / "__init__.py",
        submodule_search_locations=[str(tmp_path / "pipecat")],
    )
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return fake if name == "pipecat" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelNotFoundError, match=r"smart-turn-v3\.2-cpu\.onnx.*1\.14"):
        smart_turn_onnx_path()
