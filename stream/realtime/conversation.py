"""A Realtime session's conversation: the items a client sees, and the history the agent reads.

The client names items by id: it can add text (or audio) messages, delete items and
truncate an assistant item at what it played. ``RealtimeConversation`` keeps those
items in order and is the voice agent's history (``pipeline.agent.history.History``):
the agent's replies read it, and what the agent heard of its own replies lands in the
item of the response playing (``speaking``). The rule is the WebRTC path's: history
holds what was heard. An interruption, or a client's ``truncate``, cuts the item's
transcript at the last word that ended before the cut: the session asks the playout's
``PlaybackLedger`` (every transport's one account of what was heard), which keeps
where each word of the item's reply ended (``reply``, ``audio_start``).

User items are added by the session when a turn is committed, so ``add_user`` (the
agent's hook for the words of a turn it answers) has nothing to do here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxline.pipeline.agent.history import estimate_tokens, with_user_words

MAX_ITEMS = 512
"""Items kept; the oldest go first (the API keeps the conversation, but not forever)."""
_MESSAGE_OVERHEAD_TOKENS = 4


@dataclass(slots=True)
class Item:
    """One conversation item: a message from the user, the assistant or the system."""

    id: str
    role: str
    text: str = ""
    audio: bool = False
    """The content is audio (with ``text`` its transcript), not typed text."""
    status: str = "completed"
    audio_ms: float = 0.0
    """Assistant audio sent so far (ms)."""
    reply: int | None = None
    """The agent's reply this assistant item's audio carries (its words are in the playout's ledger)."""
    audio_start: int = 0
    """Where the item's audio begins on the playout clock (samples)."""


@dataclass(slots=True)
class RealtimeConversation:
    """The items of one Realtime session, in order; the agent's history (``History``)."""

    system_prompt: str
    budget_tokens: int = 1024
    items: list[Item] = field(default_factory=list)
    speaking: Item | None = None
    """The assistant item of the audio response playing; the agent's ``add_agent`` lands here."""

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert ``item`` after ``previous_item_id`` (at the end when None); the id before it.

        Raises:
            KeyError: ``previous_item_id`` is not an item.
        """
        if previous_item_id is None:
            self.items.append(item)
            index = len(self.items) - 1
        else:
            index = self.index(previous_item_id) + 1
            self.items.insert(index, item)
        while len(self.items) > MAX_ITEMS:
            self.items.pop(0)
            index -= 1
        return self.items[index - 1].id if index > 0 else None

    def index(self, item_id: str) -> int:
        """Position of ``item_id``. Raises KeyError if it is not an item."""
        for index, item in enumerate(self.items):
            if item.id == item_id:
                return index
        raise KeyError(item_id)

    def get(self, item_id: str) -> Item | None:
        """The item ``item_id``, or None."""
        return next((item for item in self.items if item.id == item_id), None)

    def delete(self, item_id: str) -> bool:
        """Remove ``item_id``; False if there is no such item."""
        item = self.get(item_id)
        if item is None:
            return False
        self.items.remove(item)
        if self.speaking is item:
            self.speaking = None
        return True

    def last_id(self) -> str | None:
        """The id of the newest item, or None."""
        return self.items[-1].id if self.items else None

    # -- History ---------------------------------------------------------------------

    def add_user(self, text: str) -> None:
        """Nothing: the session adds each committed user turn as an item itself."""

    def add_agent(self, heard_text: str) -> None:
        """What the user heard of the reply just ended becomes its item's transcript."""
        if self.speaking is not None:
            self.speaking.text = heard_text.strip()

    def messages(self) -> list[dict[str, str]]:
        """System prompt (with any system items), then the newest items that fit the budget, oldest first."""
        system = " ".join([self.system_prompt, *(i.text for i in self.items if i.role == "system" and i.text)]).strip()
        kept: list[dict[str, str]] = []
        budget = self.budget_tokens - estimate_tokens(system) - _MESSAGE_OVERHEAD_TOKENS
        for item in reversed(self.items):
            text = item.text.strip()
            if not text or item.role == "system":
                continue
            cost = estimate_tokens(text) + _MESSAGE_OVERHEAD_TOKENS
            if kept and cost > budget:
                break
            budget -= cost
            if kept and kept[0]["role"] == item.role:
                kept[0]["content"] = f"{text} {kept[0]['content']}"
            else:
                kept.insert(0, {"role": item.role, "content": text})
        while kept and kept[0]["role"] == "assistant":
            kept.pop(0)
        return [{"role": "system", "content": system}, *kept]

    def messages_with_user(self, text: str) -> list[dict[str, str]]:
        """``messages()`` with ``text`` as the user's next words."""
        return with_user_words(self.messages(), text)
