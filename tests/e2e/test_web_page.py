"""The browser call page in a real headless Chromium, against a real server and real models.

Chromium's fake microphone plays a WAV made here (Piper asking a question, looped);
the page calls the agent over WebRTC, shows both sides' captions and the turn's
latency waterfall, and plays the agent's voice, whose level it measures.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import playwright.async_api as playwright_api
import pytest
import soundfile
import soxr

from tests.conftest import get, http, running_server
from tests.speech_fixtures import SAMPLE_RATE_HZ, silence, speech
from voxline.pipeline.recipes.agent import AgentEngines
from voxline.pipeline.recipes.captioner import CaptionEngines

pytestmark = pytest.mark.slow

Browser = playwright_api.Browser
Page = playwright_api.Page
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()
MIC_RATE_HZ = 48000
QUESTION = "How many legs does a spider have?"
LEAD_IN_S = 3.0  # the call connects within this; Chromium starts the file when the mic opens
HEARD_PEAK = 0.05
CHROMIUM_ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",  # the sandbox's closed network refuses Chromium's own calls home
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CALL_TIMEOUT_MS = 15_000
TURN_TIMEOUT_MS = 30_000

def write_mic_wav(path: Path, audio_16k: np.ndarray) -> Path:
    """16-bit PCM mono at 48 kHz: what Chromium's fake capture reads (it loops the file)."""
    audio = soxr.resample(audio_16k, SAMPLE_RATE_HZ, MIC_RATE_HZ)
    soundfile.write(path, audio, MIC_RATE_HZ, subtype="PCM_16")
    return path


@contextlib.asynccontextmanager
async def chromium(mic_wav: Path) -> AsyncIterator[Browser]:
    """Headless Chromium with ``mic_wav`` as its microphone and permission to use it."""
    assert CHROMIUM_INSTALLED, "the browser test needs Debian's chromium: apt-get install chromium (README test command)"
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic_wav}"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def question_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium whose microphone asks QUESTION after a lead-in, then stays quiet ~10 s."""
    wav = write_mic_wav(
        tmp_path / "question.wav", np.concatenate([silence(LEAD_IN_S), speech(QUESTION), silence(10.0)])
    )
    async with chromium(wav) as browser:
        yield browser


@pytest.fixture
async def quiet_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium whose microphone is silent."""
    async with chromium(write_mic_wav(tmp_path / "quiet.wav", silence(2.0))) as browser:
        yield browser


async def open_page(browser: Browser, base_url: str) -> tuple[Page, list[str]]:
    """A fresh tab on the call page; the list collects its console output for failure messages."""
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    await page.goto(base_url + "/")
    await expect(page.get_by_role("button", name="Start call")).to_be_visible()
    return page, console


async def start_refused_call(page: Page) -> tuple[int, dict[str, str], dict[str, str]]:
    """Click Start on a page the server will refuse: the answer's status, headers and error."""
    async with page.expect_response("**/v1/webrtc/offer", timeout=CALL_TIMEOUT_MS) as answer:
        await page.get_by_role("button", name="Start call").click()
    response = await answer.value
    return response.status, response.headers, (await response.json())["error"]


def wait_for_calls(url: str, calls: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        live = int(get(url, "/healthz").json()["calls"])
        if live == calls or time.monotonic() > deadline:
            return live
        time.sleep(0.1)


async def test_a_caller_asks_in_the_browser_and_sees_and_hears_the_answer(
    caption_engines: CaptionEngines, agent_engines: AgentEngines, question_browser: Browser, tmp_path: Path
) -> None:
    with running_server(caption_engines, agent_engines, max_calls=1) as url:
        page, console = await open_page(question_browser, http(url))
        try:
            await page.get_by_role("button", name="Start call").click()
            await expect(page.locator("body")).to_have_attribute("data-state", "in-call", timeout=CALL_TIMEOUT_MS)

            # A second caller while the server is at its limit is told so and stays idle.
            other, _ = await open_page(question_browser, http(url))
            status, headers, error = await start_refused_call(other)
            assert (status, error["code"]) == (503, "server_busy") and int(headers["retry-after"]) > 0
            await expect(other.get_by_role("alert")).to_have_text(error["message"])
            await expect(other.locator("body")).to_have_attribute("data-state", "idle")
            await other.close()

            user = page.locator("#transcript .line.user").filter(has_text=re.compile("spider", re.IGNORECASE))
            await expect(user.first).to_be_visible(timeout=TURN_TIMEOUT_MS)
            waterfall = page.locator("#transcript .line.agent .waterfall[data-v2v-ms]")
            await expect(waterfall.first).to_be_visible(timeout=TURN_TIMEOUT_MS)
            await expect(waterfall.first.locator(".stage")).to_have_count(5)
            agent_text = page.locator("#transcript .line.agent .text")
            await expect(agent_text.first).to_have_text(re.compile(r"\w"), timeout=TURN_TIMEOUT_MS)
            await page.wait_for_function(f"window.voxline.agentPeak > {HEARD_PEAK}", timeout=TURN_TIMEOUT_MS)
            await page.screenshot(path=tmp_path / "call.png")
            v2v_ms = int(await waterfall.first.get_attribute("data-v2v-ms") or "0")
            assert 0 < v2v_ms < 10_000
            assert await page.locator("#transcript .line").first.evaluate("li => li.classList.contains('user')")

            await page.get_by_role("button", name="Stop call").click()
            await expect(page.locator("body")).to_have_attribute("data-state", "idle", timeout=5_000)
            await expect(page.get_by_role("button", name="Start call")).to_be_enabled()
            assert await page.get_by_role("alert").is_hidden()
        except (AssertionError, playwright_api.Error) as failure:
            raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure
        assert wait_for_calls(url, 0, timeout_s=5.0) == 0


async def test_a_refused_call_shows_the_servers_reason_and_returns_to_idle(
    caption_engines: CaptionEngines, quiet_browser: Browser
) -> None:
    with running_server(caption_engines) as url:  # calls are off: 503 calls_unavailable
        page, _ = await open_page(quiet_browser, http(url))
        status, _, error = await start_refused_call(page)
        assert (status, error["code"]) == (503, "calls_unavailable")
        await expect(page.get_by_role("alert")).to_have_text(error["message"])
        await expect(page.locator("body")).to_have_attribute("data-state", "idle")
        await expect(page.get_by_role("button", name="Start call")).to_be_visible()
        assert get(url, "/healthz").json()["calls"] == 0


INTERRUPTED_TURN = [
    {"type": "user_partial", "utterance": 1, "text": "how many"},
    {"type": "user_final", "utterance": 1, "text": "How many legs?"},
    {"type": "user_final", "utterance": 2, "text": ""},
    {"type": "user_turn", "reply": 1, "text": "How many legs?", "complete": True},
    {"type": "agent_text", "reply": 1, "text": "A spider has eight legs,"},
    {"type": "agent_text", "reply": 1, "text": "and most have eight eyes."},
    {"type": "agent_paused", "reply": 1, "at": 1.0},
    {"type": "interrupted", "reply": 1, "heard": "A spider has eight legs, and", "reason": "words"},
    {"type": "user_turn", "reply": 2, "text": "Wait", "complete": False},
    {"type": "reply_discarded", "reply": 2},
    {"type": "user_final", "utterance": 3, "text": "Thanks."},
    {"type": "user_turn", "reply": 3, "text": "Thanks.", "complete": True},
    {"type": "agent_text", "reply": 3, "text": "You are welcome"},
    {"type": "agent_done", "reply": 3, "text": "You are welcome.", "gap_ms": 0.0},
    {
        "type": "turn_latency", "reply": 3, "v2v_ms": 612.4,
        "waterfall_ms": {
            "speech_end": 0, "asr_final": 120, "endpoint": 140,
            "llm_first_token": 300, "tts_first_audio": 600, "audio_out": 612.4,
        },
        "breakdown_ms": {},
    },
    {"type": "error", "code": "reply_failed", "message": "the model went away"},
]


async def test_the_transcript_cuts_an_interrupted_reply_to_what_was_heard(
    caption_engines: CaptionEngines, quiet_browser: Browser
) -> None:
    with running_server(caption_engines) as url:
        page, console = await open_page(quiet_browser, http(url))
        await page.evaluate("events => events.forEach(window.voxline.receive)", INTERRUPTED_TURN)
        lines = page.locator("#transcript .line")
        shown = await lines.evaluate_all("lis => lis.map(li => [li.className, li.querySelector('.text').textContent])")
        assert shown == [
            ["line user final", "How many legs?"],
            ["line agent interrupted", "A spider has eight legs, and"],
            ["line user final", "Thanks."],
            ["line agent", "You are welcome."],
        ], console
        await expect(page.locator(".line.agent[data-reply='3'] .waterfall")).to_have_attribute("data-v2v-ms", "612")
        await expect(page.get_by_role("alert")).to_contain_text("the model went away")


VC_SPEECH = "Please call Stella and ask her to bring these things with her from the store."


@pytest.fixture
async def talking_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium whose microphone speaks a long sentence after a lead-in, then pauses briefly (looped)."""
    wav = write_mic_wav(tmp_path / "talk.wav", np.concatenate([silence(LEAD_IN_S), speech(VC_SPEECH), silence(1.0)]))
    async with chromium(wav) as browser:
        yield browser


async def expect_applied(page: Page, semitones: str, formant: str) -> None:
    applied = page.locator("#vc-applied")
    await expect(applied).to_have_attribute("data-semitones", semitones, timeout=CALL_TIMEOUT_MS)
    await expect(applied).to_have_attribute("data-formant", formant)


async def test_the_page_switches_to_the_voice_changer_and_its_sliders_apply_live(
    caption_engines: CaptionEngines, agent_engines: AgentEngines, talking_browser: Browser, tmp_path: Path
) -> None:
    with running_server(caption_engines, agent_engines, max_calls=1) as url:
        page, console = await open_page(talking_browser, http(url))
        try:
            modes = page.get_by_role("radiogroup", name="Mode")
            await expect(page.locator("#vc-panel")).to_be_hidden()
            await modes.get_by_role("radio", name="Voice changer").check()
            await expect(page.locator("body")).to_have_attribute("data-mode", "voice_changer")
            await expect(page.locator("body")).to_have_attribute("data-voices", "loaded")  # the server's presets
            await page.get_by_label("Preset").select_option("chipmunk")  # +8 semitones, formant 1.25
            semitones = page.get_by_role("slider", name="Pitch")
            await expect(semitones).to_have_value("8")
            await expect(page.get_by_role("slider", name="Formant")).to_have_value("1.25")

            async with page.expect_request("**/v1/webrtc/offer") as offer:
                await page.get_by_role("button", name="Start call").click()
            session = (await offer.value).post_data_json["session"]
            assert session["mode"] == "voice_changer"
            assert (session["vc"]["semitones"], session["vc"]["formant"]) == (8, 1.25)
            await expect(page.locator("body")).to_have_attribute("data-state", "in-call", timeout=CALL_TIMEOUT_MS)
            for name in ("Agent", "Voice changer", "Anonymizer"):
                await expect(modes.get_by_role("radio", name=name)).to_be_disabled()

            # The server's own word for the voice: vc.ready, or the vc.updated answering the
            # page's sync when the channel opens (vc.ready is sent before it can open, and lost).
            await expect_applied(page, "8", "1.25")
            await page.wait_for_function(f"window.voxline.agentPeak > {HEARD_PEAK}", timeout=TURN_TIMEOUT_MS)
            await expect(page.locator("#vc-latency")).to_have_attribute("data-total-ms", re.compile(r"^\d+$"))

            await semitones.fill("-3")  # mid-call: a vc.update, answered by vc.updated
            await expect_applied(page, "-3", "1.25")
            await expect(page.locator("#vc-preset")).to_have_value("custom")
            await page.keyboard.press("ArrowLeft")  # the slider keeps the focus: one step down
            await expect_applied(page, "-3.5", "1.25")
            await page.get_by_label("Preset").select_option("giant")
            await expect_applied(page, "-8", "0.78")
            updates = await page.evaluate("window.voxline.events.filter(e => e.type === 'vc.updated').length")
            assert updates <= 5, "one vc.updated per change (and one when the channel opened)"
            await page.screenshot(path=tmp_path / "voice_changer.png")
            assert await page.get_by_role("alert").is_hidden()

            await page.get_by_role("button", name="Stop call").click()
            await expect(page.locator("body")).to_have_attribute("data-state", "idle", timeout=5_000)
            await expect(modes.get_by_role("radio", name="Voice changer")).to_be_enabled()
            await expect(modes.get_by_role("radio", name="Voice changer")).to_be_checked()
        except (AssertionError, playwright_api.Error) as failure:
            raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure
        assert wait_for_calls(url, 0, timeout_s=5.0) == 0


async def test_the_anonymizer_lists_each_re_spoken_phrase(
    caption_engines: CaptionEngines, agent_engines: AgentEngines, question_browser: Browser
) -> None:
    with running_server(caption_engines, agent_engines, max_calls=1) as url:
        page, console = await open_page(question_browser, http(url))
        try:
            await page.get_by_role("radio", name="Anonymizer").check()
            await expect(page.locator("#vc-panel")).to_be_hidden()
            await page.get_by_role("button", name="Start call").click()
            await expect(page.locator("body")).to_have_attribute("data-state", "in-call", timeout=CALL_TIMEOUT_MS)
            phrase = page.locator("#transcript .line.anon").filter(has_text=re.compile("spider", re.IGNORECASE))
            await expect(phrase.first).to_be_visible(timeout=TURN_TIMEOUT_MS)
            await expect(phrase.first).to_have_attribute("data-latency-ms", re.compile(r"^\d+$"))
            await page.wait_for_function(f"window.voxline.agentPeak > {HEARD_PEAK}", timeout=TURN_TIMEOUT_MS)
            await expect(page.locator("#level-label")).to_have_text("re-spoken")
            await expect(page.locator("#transcript .line.agent")).to_have_count(0)

            await page.get_by_role("button", name="Stop call").click()
            await expect(page.locator("body")).to_have_attribute("data-state", "idle", timeout=5_000)
            assert await page.get_by_role("alert").is_hidden()
        except (AssertionError, playwright_api.Error) as failure:
            raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure
        assert wait_for_calls(url, 0, timeout_s=5.0) == 0
