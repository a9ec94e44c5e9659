"""The viewer page /watch/{id} in a real headless Chromium, against a real server and real models.

A publisher streams Piper speech into ``/v1/captions`` at real-time pace and learns its
session id from the server's first message; viewer pages follow it over
``/v1/sessions/{id}/captions``: live, after the end (the replay), as a transparent
overlay, and with tokens. Reconnection is driven through a scripted stand-in for the
viewer socket (Playwright's WebSocket routing), since a real server does not drop
viewers on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import playwright.async_api as playwright_api
import pytest
import websockets

from tests.conftest import http, running_server
from tests.speech_fixtures import (
    COFFEE,
    FOX,
    SAMPLE_RATE_HZ,
    normalize,
    silence,
    speech,
    word_errors,
)
from voxline.clients.caption_client import pcm16
from voxline.pipeline.recipes.captioner import CaptionEngines

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install chromium"),
]

Browser = playwright_api.Browser
Page = playwright_api.Page
WebSocketRoute = playwright_api.WebSocketRoute
expect = playwright_api.expect

CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",  # the sandbox's closed network refuses Chromium's own calls home
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHUNK_S = 0.1
SESSION_TIMEOUT_S = 10.0
PAGE_TIMEOUT_MS = 10_000
FINAL_TIMEOUT_MS = 30_000  # Whisper on two shared cores, beside a browser
NO_RETRY_WAIT_S = 2.0  # several times the page's first backoff (at most 0.5 s)
TRANSPARENT = "rgba(0, 0, 0, 0)"
WHITE = "rgb(255, 255, 255)"
SECRET = "watch-page-test-secret-of-32-bytes!"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium (never a downloaded one: no ``playwright install``)."""
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


class Publisher:
    """One ``/v1/captions`` session: audio goes in at real-time pace, the server's events are kept."""

    def __init__(self, ws: websockets.ClientConnection, session_id: str) -> None:
        self.ws = ws
        self.id = session_id
        self.events: list[dict[str, Any]] = []

    async def read(self) -> None:
        """Collect events until the server closes the socket."""
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                self.events.append(json.loads(message))

    async def say(self, audio: np.ndarray) -> None:
        """Send ``audio`` (16 kHz float32) in CHUNK_S chunks, one per CHUNK_S: a live speaker."""
        step = round(SAMPLE_RATE_HZ * CHUNK_S)
        for start in range(0, len(audio), step):
            await self.ws.send(pcm16(audio[start : start + step]))
            await asyncio.sleep(CHUNK_S)

    @property
    def finals(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "final" and e["text"].strip()]


@contextlib.asynccontextmanager
async def publishing(url: str, token: str = "") -> AsyncIterator[Publisher]:
    """A caption session with its id from the server's first message; ``end`` is sent on exit
    and the exit waits for the server's last finals and close."""
    query = f"?token={token}" if token else ""
    async with websockets.connect(url + "/v1/captions" + query) as ws:
        config = {"type": "config", "sample_rate": SAMPLE_RATE_HZ, "encoding": "pcm_s16le", "language": "en"}
        await ws.send(json.dumps(config))
        first = json.loads(await asyncio.wait_for(ws.recv(), SESSION_TIMEOUT_S))
        assert first["type"] == "session" and first["id"], first
        publisher = Publisher(ws, first["id"])
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(publisher.read())
            try:
                yield publisher
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.wait_for(reader, FINAL_TIMEOUT_MS / 1000)
            finally:
                reader.cancel()
    assert ws.close_code == 1000, (ws.close_code, publisher.events[-3:])


async def open_watch(browser: Browser, url: str, path: str) -> tuple[Page, list[str]]:
    """A fresh tab on ``path`` of the server; the list collects its console for failure messages."""
    page = await browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    await page.goto(http(url) + path)
    return page, console


async def shown_finals(page: Page) -> list[str]:
    return await page.locator("#captions .final .text").all_text_contents()


async def wait_for_words(page: Page, spoken: str, timeout_ms: int = FINAL_TIMEOUT_MS) -> list[str]:
    """The page's finals once they hold ``spoken`` (up to one word wrong: Whisper's small slips)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        finals = await shown_finals(page)
        if word_errors(spoken, " ".join(finals)) <= 1:
            return finals
        assert time.monotonic() < deadline, f"the page shows {finals!r}, not {spoken!r}"
        await asyncio.sleep(0.2)


def words(lines: list[str]) -> list[str]:
    return normalize(" ".join(lines))


async def test_a_viewer_sees_the_words_live_then_ended_and_a_late_viewer_gets_the_replay(
    caption_engines: CaptionEngines, browser: Browser, tmp_path: Path
) -> None:
    with running_server(caption_engines) as url:
        async with publishing(url) as publisher:
            page, console = await open_watch(browser, url, f"/watch/{publisher.id}")
            try:
                await expect(page.locator("#status")).to_have_text("live", timeout=PAGE_TIMEOUT_MS)
                await expect(page.locator("#session-id")).to_have_text(publisher.id)
                await publisher.say(np.concatenate([silence(0.5), speech(FOX), silence(1.5)]))
                first = await wait_for_words(page, FOX)  # while the session is still live
                await expect(page.locator("#status")).to_have_text("live")
                assert await page.evaluate("window.watch.events.some(e => e.type === 'partial')")
                await publisher.say(np.concatenate([speech(COFFEE), silence(0.5)]))
            except (AssertionError, playwright_api.Error) as failure:
                raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure
        spoken = publisher.finals
        assert word_errors(f"{FOX} {COFFEE}", " ".join(spoken)) <= 2, spoken

        try:
            await expect(page.locator("#status")).to_have_text("ended", timeout=PAGE_TIMEOUT_MS)
            await expect(page.locator("body")).to_have_attribute("data-state", "ended")
            shown = await shown_finals(page)
            assert words(shown) == words(spoken), "the page shows what the server recognised"
            assert words(first) == words(spoken[: len(first)])
            assert await page.get_by_role("alert").is_hidden()
            assert await page.evaluate("getComputedStyle(document.documentElement).backgroundColor") != TRANSPARENT

            # A seq already shown is skipped; a new partial shows apart from the finals, greyed.
            last = await page.evaluate("window.watch.events.filter(e => e.type === 'final').at(-1)")
            await page.evaluate("event => window.watch.receive(event)", {**last, "text": "a duplicate"})
            assert await shown_finals(page) == shown
            partial = {"type": "partial", "seq": last["seq"] + 1, "utterance": last["utterance"] + 1, "text": "and then"}
            await page.evaluate("event => window.watch.receive(event)", partial)
            await expect(page.locator("#partial .line.partial .text")).to_have_text("and then")
            assert await page.locator("#partial .text").evaluate("t => getComputedStyle(t).fontStyle") == "italic"
            assert await shown_finals(page) == shown
            await page.screenshot(path=tmp_path / "watch.png")
        except (AssertionError, playwright_api.Error) as failure:
            raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure

        # After the end: a new viewer still gets the whole transcript, then "ended".
        late, console = await open_watch(browser, url, f"/watch/{publisher.id}?from=start")
        try:
            await expect(late.locator("#status")).to_have_text("ended", timeout=PAGE_TIMEOUT_MS)
            assert words(await shown_finals(late)) == words(spoken)
        except (AssertionError, playwright_api.Error) as failure:
            raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure

        # The overlay: nothing behind the text, large white outlined captions, the last lines only.
        overlay, console = await open_watch(browser, url, f"/watch/{publisher.id}?transparent=1&lines=1")
        try:
            await expect(overlay.locator("body")).to_have_attribute("data-state", "ended", timeout=PAGE_TIMEOUT_MS)
            for element in ("document.body", "document.documentElement"):
                assert await overlay.evaluate(f"getComputedStyle({element}).backgroundColor") == TRANSPARENT
            await expect(overlay.locator("header")).to_be_hidden()
            last_line = overlay.locator("#captions .final:visible")
            await expect(last_line).to_have_count(1)
            assert words(await last_line.all_text_contents()) == words(spoken[-1:])
            style = await last_line.evaluate(
                "li => { const s = getComputedStyle(li);"
                " return [s.color, parseFloat(s.fontSize), s.textShadow, s.webkitTextStrokeWidth]; }"
            )
            color, font_px, shadow, stroke = style
            assert color == WHITE and font_px >= 28 and (shadow != "none" or stroke not in ("", "0px")), style
            await overlay.screenshot(path=tmp_path / "overlay.png", omit_background=True)

            plain_overlay, _ = await open_watch(browser, url, f"/watch/{publisher.id}?transparent=1")
            await expect(plain_overlay.locator("body")).to_have_attribute("data-state", "ended", timeout=PAGE_TIMEOUT_MS)
            await expect(plain_overlay.locator("#captions .final:visible")).to_have_count(min(3, len(spoken)))
        except (AssertionError, playwright_api.Error) as failure:
            raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure

        # An unknown id: the server's refusal on the page, and no retrying.
        unknown, console = await open_watch(browser, url, "/watch/no-such-session")
        error = unknown.get_by_role("alert")
        await expect(error).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        await expect(error).to_have_attribute("data-code", "unknown_session")
        await expect(unknown.locator("body")).to_have_attribute("data-state", "error")
        await asyncio.sleep(NO_RETRY_WAIT_S)
        assert await unknown.evaluate("window.watch.sockets") == 1, console


async def test_the_page_passes_its_token_on_to_the_viewer_socket(
    caption_engines: CaptionEngines, browser: Browser
) -> None:
    from voxline.stream.auth import mint_token

    with running_server(caption_engines, secret=SECRET) as url:
        async with publishing(url, mint_token(SECRET, ["publish:*"], 600)) as publisher:
            await publisher.say(np.concatenate([speech(FOX), silence(0.5)]))
        spoken = publisher.finals
        assert word_errors(FOX, " ".join(spoken)) <= 1, spoken

        watch_token = mint_token(SECRET, [f"watch:{publisher.id}"], 600)
        page, console = await open_watch(browser, url, f"/watch/{publisher.id}?token={watch_token}")
        await expect(page.locator("#status")).to_have_text("ended", timeout=PAGE_TIMEOUT_MS)
        assert words(await shown_finals(page)) == words(spoken), console

        refusals = [
            ("", {"missing_token", "invalid_token"}),
            ("?token=not-a-token", {"invalid_token"}),
            (f"?token={mint_token(SECRET, ['watch:some-other-session'], 600)}", {"forbidden"}),
        ]
        for query, codes in refusals:
            refused, console = await open_watch(browser, url, f"/watch/{publisher.id}{query}")
            error = refused.get_by_role("alert")
            await expect(error).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            assert await error.get_attribute("data-code") in codes, (query, await error.text_content(), console)
            await expect(refused.locator("#captions .final")).to_have_count(0)
            await expect(refused.locator("body")).to_have_attribute("data-state", "error")


SESSION = {"type": "session", "id": "scripted", "kind": "call", "node": "n1", "started_at": 1.7e9, "live": True}
SCRIPT: list[dict[str, Any]] = [
    {"type": "partial", "seq": 1, "utterance": 1, "speaker": "user", "text": "hello"},
    {"type": "final", "seq": 2, "utterance": 1, "speaker": "user", "text": "Hello there."},
    {"type": "partial", "seq": 3, "utterance": 1, "speaker": "agent", "text": "hi how"},
    {"type": "final", "seq": 4, "utterance": 1, "speaker": "agent", "text": "Hi, how can I help?"},
    {"type": "partial", "seq": 5, "utterance": 2, "speaker": "user", "text": "what"},
    {"type": "final", "seq": 6, "utterance": 2, "speaker": "user", "text": "What time is it?"},
]
DROPPED_AFTER = 3  # the first socket dies after this many caption events, mid-utterance


async def test_a_dropped_viewer_reconnects_from_the_start_and_shows_each_line_once(
    caption_engines: CaptionEngines, browser: Browser
) -> None:
    with running_server(caption_engines) as url:
        page = await browser.new_page()
        sockets: list[str] = []
        resume = asyncio.Event()

        async def viewer_socket(ws: WebSocketRoute) -> None:
            """The first socket sends part of the script and dies (1011); the next replays it all."""
            sockets.append(ws.url)
            if len(sockets) == 1:
                for event in [SESSION, *SCRIPT[:DROPPED_AFTER]]:
                    ws.send(json.dumps(event))
                await ws.close(code=1011, reason="node restarting")
                return
            await resume.wait()
            for event in [SESSION, *SCRIPT, {"type": "end", "reason": "node_lost"}]:
                ws.send(json.dumps(event))
            await ws.close(code=1000)

        await page.route_web_socket(re.compile(r"/v1/sessions/scripted/captions\?"), viewer_socket)
        await page.goto(http(url) + "/watch/scripted?from=now&token=abc&speaker=1")
        await expect(page.locator("body")).to_have_attribute("data-state", "reconnecting", timeout=PAGE_TIMEOUT_MS)
        await expect(page.locator("#status")).to_contain_text("reconnecting")
        assert await shown_finals(page) == ["Hello there."]
        await expect(page.locator("#partial .line.partial.agent .text")).to_have_text("hi how")
        resume.set()

        await expect(page.locator("#status")).to_have_text("the session's server was lost", timeout=PAGE_TIMEOUT_MS)
        assert await shown_finals(page) == ["Hello there.", "Hi, how can I help?", "What time is it?"]
        assert await page.locator("#captions .final .who").all_text_contents() == ["user", "agent", "user"]
        await expect(page.locator("#partial .line")).to_have_count(0)
        assert "from=now" in sockets[0] and "from=start" in sockets[1], sockets
        assert all("token=abc" in socket for socket in sockets), sockets
        await asyncio.sleep(NO_RETRY_WAIT_S)  # no reconnect after an end
        assert len(sockets) == 2 and await page.evaluate("window.watch.sockets") == 2
