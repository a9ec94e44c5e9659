"""A Realtime session's conversation: its items, and the history the agent reads."""

from __future__ import annotations

import pytest

from voxline.pipeline.agent.history import estimate_tokens
from voxline.stream.realtime.conversation import Item, RealtimeConversation

# -- messages ----------------------------------------------------------------------------


def _item(item_id: str, role: str, text: str, *, status: str = "completed", audio: bool = False) -> Item:
    return Item(id=item_id, role=role, text=text, status=status, audio=audio)


def test_messages_start_with_the_system_prompt_and_keep_order() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Hi."))
    conversation.add(_item("a1", "assistant", "Hello! How can I help?"))
    conversation.add(_item("u2", "user", "What time is it?"))
    assert conversation.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What time is it?"},
    ]


def test_system_items_join_the_system_prompt_not_the_turns() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Hi."))
    conversation.add(_item("s1", "system", "The user is called Ana."))
    conversation.add(_item("s2", "system", ""))
    conversation.add(_item("s3", "system", "Speak Spanish."))
    messages = conversation.messages()
    assert messages[0] == {"role": "system", "content": "Be brief. The user is called Ana. Speak Spanish."}
    assert messages[1:] == [{"role": "user", "content": "Hi."}]


def test_consecutive_items_of_one_role_merge_into_one_message() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Tell me about"))
    conversation.add(_item("u2", "user", "Paris."))
    conversation.add(_item("a1", "assistant", "Paris is lovely."))
    conversation.add(_item("a2", "assistant", "It has many museums."))
    conversation.add(_item("u3", "user", "Thanks."))
    assert conversation.messages()[1:] == [
        {"role": "user", "content": "Tell me about Paris."},
        {"role": "assistant", "content": "Paris is lovely. It has many museums."},
        {"role": "user", "content": "Thanks."},
    ]


def test_empty_items_are_skipped() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Hi."))
    conversation.add(_item("a1", "assistant", "", status="in_progress", audio=True))
    conversation.add(_item("u2", "user", "  "))
    assert conversation.messages() == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."},
    ]


def test_oldest_items_go_first_when_over_the_budget() -> None:
    conversation = RealtimeConversation("Be brief.", budget_tokens=60)
    for n in range(20):
        conversation.add(_item(f"u{n}", "user", f"Question number {n} about the city?"))
        conversation.add(_item(f"a{n}", "assistant", f"Answer number {n} about the city."))
    messages = conversation.messages()
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert 2 < len(messages) < 41
    assert messages[-1] == {"role": "assistant", "content": "Answer number 19 about the city."}
    # What is kept is the newest stretch, in order.
    kept = [m["content"] for m in messages[1:]]
    everything = [item.text for item in conversation.items]
    assert kept == everything[len(everything) - len(kept):]
    # And it fits the budget (4 tokens a message besides its text).
    assert sum(estimate_tokens(m["content"]) + 4 for m in messages) <= 60


def test_after_trimming_the_history_never_opens_with_an_assistant_message() -> None:
    for budget in range(20, 120, 3):
        conversation = RealtimeConversation("Be brief.", budget_tokens=budget)
        for n in range(6):
            conversation.add(_item(f"u{n}", "user", f"Q{n}?"))
            conversation.add(_item(f"a{n}", "assistant", f"A rather long answer, number {n}, about it."))
        conversation.add(_item("u6", "user", "And then?"))
        messages = conversation.messages()
        assert messages[0]["role"] == "system"
        assert len(messages) > 1, budget
        assert messages[1]["role"] == "user", budget
        assert messages[-1] == {"role": "user", "content": "And then?"}


def test_a_budget_that_holds_everything_keeps_everything() -> None:
    conversation = RealtimeConversation("Be brief.", budget_tokens=10_000)
    for n in range(10):
        conversation.add(_item(f"u{n}", "user", f"Q{n}?"))
        conversation.add(_item(f"a{n}", "assistant", f"A{n}."))
    assert len(conversation.messages()) == 21


def test_messages_with_user_appends_the_next_words() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Hi."))
    assert conversation.messages_with_user(" there ")[-1] == {"role": "user", "content": "Hi. there"}
    conversation.add(_item("a1", "assistant", "Hello."))
    assert conversation.messages_with_user("Bye.")[-2:] == [
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye."},
    ]


# -- items -------------------------------------------------------------------------------


def test_add_appends_and_returns_the_id_before_it() -> None:
    conversation = RealtimeConversation("")
    assert conversation.add(_item("i1", "user", "one")) is None
    assert conversation.add(_item("i2", "user", "two")) == "i1"
    assert conversation.last_id() == "i2"


def test_add_after_an_item_inserts_right_after_it() -> None:
    conversation = RealtimeConversation("")
    for name in ("i1", "i2", "i3"):
        conversation.add(_item(name, "user", name))
    assert conversation.add(_item("new", "user", "new"), "i1") == "i1"
    assert [item.id for item in conversation.items] == ["i1", "new", "i2", "i3"]
    assert conversation.add(_item("end", "user", "end"), "i3") == "i3"
    assert [item.id for item in conversation.items] == ["i1", "new", "i2", "i3", "end"]
    assert conversation.index("i2") == 2


def test_add_after_an_unknown_item_raises_key_error_and_adds_nothing() -> None:
    conversation = RealtimeConversation("")
    conversation.add(_item("i1", "user", "one"))
    with pytest.raises(KeyError):
        conversation.add(_item("i2", "user", "two"), "missing")
    assert [item.id for item in conversation.items] == ["i1"]


def test_delete_removes_an_item_and_refuses_unknown_ids() -> None:
    conversation = RealtimeConversation("")
    conversation.add(_item("i1", "user", "one"))
    conversation.add(_item("i2", "user", "two"))
    assert conversation.delete("missing") is False
    assert len(conversation.items) == 2
    assert conversation.delete("i1") is True
    assert [item.id for item in conversation.items] == ["i2"]
    assert conversation.get("i1") is None
    assert conversation.delete("i1") is False


def test_deleting_the_speaking_item_stops_it_being_written() -> None:
    conversation = RealtimeConversation("")
    speaking = _item("a1", "assistant", "", status="in_progress", audio=True)
    conversation.add(speaking)
    conversation.speaking = speaking
    assert conversation.delete("a1")
    assert conversation.speaking is None


def test_add_agent_writes_only_into_the_speaking_item() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Hi."))
    done = _item("a0", "assistant", "Earlier reply.")
    conversation.add(done)
    speaking = _item("a1", "assistant", "", status="in_progress", audio=True)
    conversation.add(speaking)
    conversation.speaking = speaking
    conversation.add_agent("  Hello there!  ")
    assert speaking.text == "Hello there!"
    assert done.text == "Earlier reply."
    user = conversation.get("u1")
    assert user is not None and user.text == "Hi."


def test_add_agent_without_a_speaking_item_changes_nothing() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add(_item("u1", "user", "Hi."))
    conversation.add(_item("a1", "assistant", ""))
    before = conversation.messages()
    conversation.add_agent("Hello there!")
    assert conversation.messages() == before
    assert [item.text for item in conversation.items] == ["Hi.", ""]


def test_add_user_leaves_the_items_to_the_session() -> None:
    conversation = RealtimeConversation("Be brief.")
    conversation.add_user("Hi.")
    assert conversation.items == []
    assert conversation.messages() == [{"role": "system", "content": "Be brief."}]
