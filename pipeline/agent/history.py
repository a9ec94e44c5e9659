"""One session's conversation history, kept to a token budget.

The history holds what was *said*: the user's turns as recognised, and of the
agent's replies only the words the user actually heard (an interrupted reply is cut
at the last word played; a reply interrupted before any audio leaves nothing). The
system prompt always stays; the oldest exchanges go first when the history would pass
``budget_tokens``.

Token counts are estimated (``estimate_tokens``: about four characters a token, plus a
few per message for the chat template), which is what English text averages with
SmolLM2's and GPT-style tokenizers; pass ``count_tokens`` for an exact count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

_MESSAGE_OVERHEAD_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` takes (4 characters a token, rounded up)."""
    return (len(text) + 3) // 4


def with_user_words(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    """``messages`` with ``text`` as the user's next words, merged into a trailing user message."""
    if messages[-1]["role"] == "user":
        messages[-1]["content"] += " " + text.strip()
    else:
        messages.append({"role": "user", "content": text.strip()})
    return messages


class History(Protocol):
    """What the voice agent needs of a history (``Conversation``, or a transport's own record)."""

    def add_user(self, text: str) -> None:
        """The user's words of a turn the agent is answering (or leaving unanswered)."""
        ...

    def add_agent(self, heard_text: str) -> None:
        """The part of the reply just ended that the user heard."""
        ...

    def messages(self) -> list[dict[str, str]]:
        """The chat messages for the next reply, system prompt first."""
        ...

    def messages_with_user(self, text: str) -> list[dict[str, str]]:
        """``messages()`` with ``text`` as the user's next words."""
        ...


@dataclass(slots=True)
class Conversation:
    """System prompt plus alternating user/assistant messages, trimmed to a budget."""

    system_prompt: str
    budget_tokens: int = 1024
    count_tokens: Callable[[str], int] = estimate_tokens
    _turns: list[dict[str, str]] = field(default_factory=list)

    def add_user(self, text: str) -> None:
        """Append what the user said (merged into the last user message if no reply came between)."""
        text = text.strip()
        if not text:
            return
        if self._turns and self._turns[-1]["role"] == "user":
            self._turns[-1]["content"] += " " + text
        else:
            self._turns.append({"role": "user", "content": text})
        self._trim()

    def add_agent(self, heard_text: str) -> None:
        """Append the part of a reply the user heard (nothing if they heard nothing)."""
        heard_text = heard_text.strip()
        if heard_text:
            self._turns.append({"role": "assistant", "content": heard_text})
            self._trim()

    def messages(self) -> list[dict[str, str]]:
        """The chat messages for the next reply: system prompt, then the kept history."""
        return [{"role": "system", "content": self.system_prompt}, *(dict(m) for m in self._turns)]

    def messages_with_user(self, text: str) -> list[dict[str, str]]:
        """``messages()`` plus ``text`` as the user's next words (merged into a trailing user message)."""
        return with_user_words(self.messages(), text)

    @property
    def turns(self) -> list[dict[str, str]]:
        """The kept user/assistant messages (copies)."""
        return [dict(m) for m in self._turns]

    def tokens(self) -> int:
        """Estimated tokens of ``messages()``."""
        return sum(self.count_tokens(m["content"]) + _MESSAGE_OVERHEAD_TOKENS for m in self.messages())

    def _trim(self) -> None:
        # Drop whole messages from the front; never the newest one, and never leave the
        # history starting with an assistant message.
        while len(self._turns) > 1 and self.tokens() > self.budget_tokens:
            self._turns.pop(0)
            while len(self._turns) > 1 and self._turns[0]["role"] == "assistant":
                self._turns.pop(0)
