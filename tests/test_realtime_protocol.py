"""Realtime session settings and server events, in GA and beta form, checked against the openai SDK's models."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai.types import realtime as ga
from openai.types.beta import realtime as beta

from voxline.stream.realtime.audio import RealtimeAudioFormat
from voxline.stream.realtime.protocol import (
    RealtimeProtocolError,
    ServerEvents,
    SessionSettings,
    TurnDetection,
    parse_client_event,
)

GA_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ga.RealtimeServerEvent)
BETA_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(beta.RealtimeServerEvent)

TOOLS = [{
    "type": "function", "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]


def _ga_session_update() -> dict[str, Any]:
    return {
        "type": "realtime",
        "instructions": "Answer in one sentence.",
        "output_modalities": ["text"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "turn_detection": {"type": "server_vad", "threshold": 0.7, "silence_duration_ms": 800,
                                   "create_response": False},
                "transcription": {"model": "whisper-1", "language": "en"},
            },
            "output": {"voice": "verse"},
        },
        "tools": TOOLS,
    }


# -- GA session.update -------------------------------------------------------------------


def test_ga_session_update_applies_every_field() -> None:
    settings = SessionSettings().update_ga(_ga_session_update())
    assert settings.kind == "realtime"
    assert settings.instructions == "Answer in one sentence."
    assert settings.output_modalities == ("text",)
    assert not settings.speaks
    assert settings.input_format == RealtimeAudioFormat("audio/pcmu")
    assert settings.input_format.rate_hz == 8000
    assert settings.output_format == RealtimeAudioFormat("audio/pcm")  # not named: unchanged
    assert settings.turn_detection == TurnDetection(
        type="server_vad", threshold=0.7, silence_duration_ms=800, create_response=False
    )
    assert settings.transcription == {"model": "whisper-1", "language": "en", "prompt": None}
    assert settings.voice == "verse"
    assert settings.echoed["tools"] == TOOLS


def test_ga_session_updated_validates_against_the_sdk_and_echoes_the_settings() -> None:
    settings = SessionSettings().update_ga(_ga_session_update())
    event = ga.SessionUpdatedEvent.model_validate(ServerEvents().session("session.updated", settings, "sess_1"))
    assert event.type == "session.updated"
    assert event.event_id.startswith("event_")
    session = event.session
    assert isinstance(session, ga.RealtimeSessionCreateRequest)
    assert session.id == "sess_1"  # type: ignore[attr-defined]
    assert session.instructions == "Answer in one sentence."
    assert session.output_modalities == ["text"]
    assert session.audio is not None and session.audio.input is not None and session.audio.output is not None
    assert session.audio.input.format is not None and session.audio.input.format.type == "audio/pcmu"
    turn = session.audio.input.turn_detection
    assert turn is not None and turn.type == "server_vad"
    assert turn.threshold == 0.7 and turn.silence_duration_ms == 800 and turn.create_response is False
    transcription = session.audio.input.transcription
    assert transcription is not None and transcription.model == "whisper-1" and transcription.language == "en"
    assert session.audio.output.voice == "verse"
    assert session.audio.output.format is not None and session.audio.output.format.type == "audio/pcm"
    # Tools are accepted and reported back, though nothing calls them.
    assert session.tools is not None and len(session.tools) == 1
    tool = session.tools[0]
    assert tool.name == "get_weather"  # type: ignore[union-attr]
    assert tool.parameters == TOOLS[0]["parameters"]  # type: ignore[union-attr]


def test_ga_transcription_session_created_validates_against_the_sdk() -> None:
    settings = SessionSettings().update_ga({
        "type": "transcription",
        "audio": {"input": {
            "format": {"type": "audio/pcma"},
            "transcription": {"model": "gpt-4o-transcribe", "language": "de", "prompt": "Namen: Jürgen"},
            "turn_detection": {"type": "semantic_vad", "eagerness": "low"},
            "noise_reduction": {"type": "near_field"},
        }},
    })
    assert settings.kind == "transcription"
    assert settings.input_format == RealtimeAudioFormat("audio/pcma")
    assert settings.turn_detection is not None and settings.turn_detection.eagerness == "low"
    event = ga.SessionCreatedEvent.model_validate(ServerEvents().session("session.created", settings, "sess_2"))
    session = event.session
    assert isinstance(session, ga.RealtimeTranscriptionSessionCreateRequest)
    assert session.type == "transcription"
    assert session.id == "sess_2"  # type: ignore[attr-defined]
    assert session.audio is not None and session.audio.input is not None
    audio_in = session.audio.input
    assert audio_in.format is not None and audio_in.format.type == "audio/pcma"
    assert audio_in.transcription is not None
    assert (audio_in.transcription.model, audio_in.transcription.language, audio_in.transcription.prompt) == (
        "gpt-4o-transcribe", "de", "Namen: Jürgen"
    )
    assert audio_in.turn_detection is not None and audio_in.turn_detection.type == "semantic_vad"
    assert audio_in.turn_detection.eagerness == "low"
    assert audio_in.noise_reduction is not None and audio_in.noise_reduction.type == "near_field"


def test_default_settings_validate_in_both_dialects() -> None:
    settings = SessionSettings()
    created = ga.SessionCreatedEvent.model_validate(ServerEvents().session("session.created", settings, "sess_d"))
    assert isinstance(created.session, ga.RealtimeSessionCreateRequest)
    assert created.session.output_modalities == ["audio"]
    assert created.session.audio is not None and created.session.audio.input is not None
    assert created.session.audio.input.turn_detection is not None
    assert created.session.audio.input.turn_detection.type == "semantic_vad"
    beta_created = beta.SessionCreatedEvent.model_validate(
        ServerEvents(beta=True).session("session.created", settings, "sess_d")
    )
    assert beta_created.session.modalities == ["text", "audio"]
    assert beta_created.session.input_audio_format == "pcm16"


def test_a_later_update_keeps_earlier_settings_and_leaves_the_first_object_alone() -> None:
    first = SessionSettings().update_ga(_ga_session_update())
    second = first.update_ga({"instructions": "Be playful.", "tools": []})
    assert second.instructions == "Be playful."
    assert second.voice == "verse" and second.input_format == RealtimeAudioFormat("audio/pcmu")
    assert second.echoed["tools"] == []
    assert first.instructions == "Answer in one sentence." and first.echoed["tools"] == TOOLS


def test_turn_detection_null_turns_it_off_and_renders_as_null() -> None:
    settings = SessionSettings().update_ga({"audio": {"input": {"turn_detection": None}}})
    assert settings.turn_detection is None
    rendered = ServerEvents().session("session.updated", settings, "sess_n")
    assert rendered["session"]["audio"]["input"]["turn_detection"] is None
    event = ga.SessionUpdatedEvent.model_validate(rendered)
    assert event.session.audio is not None and event.session.audio.input is not None
    assert event.session.audio.input.turn_detection is None

    beta_settings = SessionSettings().update_beta({"turn_detection": None})
    assert beta_settings.turn_detection is None
    beta_rendered = ServerEvents(beta=True).session("session.updated", beta_settings, "sess_n")
    assert beta_rendered["session"]["turn_detection"] is None
    assert beta.SessionUpdatedEvent.model_validate(beta_rendered).session.turn_detection is None


# -- beta session.update -----------------------------------------------------------------


def _beta_settings() -> SessionSettings:
    return SessionSettings().update_beta({
        "input_audio_format": "g711_ulaw",
        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
        "modalities": ["text"],
        "max_response_output_tokens": 200,
        "instructions": "Talk like a pirate.",
        "voice": "ash",
        "temperature": 0.6,
        "tools": TOOLS,
    })


def test_beta_session_update_applies_the_flat_fields() -> None:
    settings = _beta_settings()
    assert settings.kind == "realtime"
    assert settings.input_format == RealtimeAudioFormat("audio/pcmu")
    assert settings.turn_detection == TurnDetection(type="semantic_vad", eagerness="high")
    assert settings.output_modalities == ("text",)
    assert settings.max_output_tokens == 200 and settings.reply_tokens(64) == 200
    assert SessionSettings().reply_tokens(64) == 64, "'inf' is the server's own reply length"
    assert settings.instructions == "Talk like a pirate."
    assert settings.voice == "ash"
    assert settings.echoed["temperature"] == 0.6


@pytest.mark.parametrize(("kind", "model"), [
    ("session.created", beta.SessionCreatedEvent), ("session.updated", beta.SessionUpdatedEvent),
])
def test_beta_session_events_validate_against_the_sdk(kind: str, model: type[pydantic.BaseModel]) -> None:
    rendered = ServerEvents(beta=True).session(kind, _beta_settings(), "sess_3")
    assert rendered["type"] == kind
    session = model.model_validate(rendered).session  # type: ignore[attr-defined]
    assert session.id == "sess_3"
    assert session.input_audio_format == "g711_ulaw"
    assert session.output_audio_format == "pcm16"
    assert session.modalities == ["text"]
    assert session.max_response_output_tokens == 200
    assert session.instructions == "Talk like a pirate."
    assert session.voice == "ash"
    assert session.temperature == 0.6
    assert session.turn_detection.type == "semantic_vad" and session.turn_detection.eagerness == "high"
    assert [tool.name for tool in session.tools] == ["get_weather"]


def test_beta_modalities_with_audio_mean_spoken_replies() -> None:
    settings = SessionSettings(output_modalities=("text",)).update_beta({"modalities": ["text", "audio"]})
    assert settings.output_modalities == ("audio",) and settings.speaks
    rendered = beta.SessionUpdatedEvent.model_validate(
        ServerEvents(beta=True).session("session.updated", settings, "sess_m")
    )
    assert rendered.session.modalities == ["text", "audio"]


def test_beta_transcription_session_update_renders_as_transcription_session_updated() -> None:
    settings = SessionSettings().update_beta({
        "input_audio_format": "g711_alaw",
        "input_audio_transcription": {"model": "gpt-4o-mini-transcribe", "language": "fr"},
        "turn_detection": {"type": "server_vad", "threshold": 0.3, "silence_duration_ms": 650},
    }, transcription=True)
    assert settings.kind == "transcription"
    assert settings.input_format == RealtimeAudioFormat("audio/pcma")
    rendered = ServerEvents(beta=True).session("session.updated", settings, "sess_4")
    assert rendered["type"] == "transcription_session.updated"
    event = beta.TranscriptionSessionUpdatedEvent.model_validate(rendered)
    session = event.session
    assert session.input_audio_format == "g711_alaw"
    assert session.input_audio_transcription is not None
    assert session.input_audio_transcription.model == "gpt-4o-mini-transcribe"
    assert session.input_audio_transcription.language == "fr"
    assert session.turn_detection is not None
    assert (session.turn_detection.type, session.turn_detection.threshold,
            session.turn_detection.silence_duration_ms) == ("server_vad", 0.3, 650)
    assert session.modalities == ["text"]


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(("session", "param"), [
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.input.format"),
    ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.output.format"),
    ({"audio": {"input": {"turn_detection": {"type": "push_to_talk"}}}}, "session.audio.input.turn_detection.type"),
    ({"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2.0}}}},
     "session.audio.input.turn_detection.threshold"),
    ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "fast"}}}},
     "session.audio.input.turn_detection.eagerness"),
    ({"output_modalities": ["audio", "text"]}, "session.output_modalities"),
    ({"instructions": 42}, "session.instructions"),
    ({"instructions": ["Be brief."]}, "session.instructions"),
    ({"type": "chat"}, "session.type"),
    ({"max_output_tokens": 0}, "session.max_output_tokens"),
])
def test_a_bad_ga_field_is_refused_naming_that_field(session: dict[str, Any], param: str) -> None:
    with pytest.raises(RealtimeProtocolError) as caught:
        SessionSettings().update_ga(session)
    assert caught.value.param == param
    assert caught.value.code == "invalid_value"
    assert param in caught.value.message


@pytest.mark.parametrize(("session", "param"), [
    ({"input_audio_format": "pcm24"}, "session.input_audio_format"),
    ({"turn_detection": {"type": "semantic_vad", "eagerness": "fast"}}, "session.turn_detection.eagerness"),
    ({"turn_detection": {"type": "server_vad", "threshold": 2.0}}, "session.turn_detection.threshold"),
    ({"modalities": ["video"]}, "session.modalities"),
    ({"max_response_output_tokens": 0}, "session.max_response_output_tokens"),
    ({"input_audio_format": {"type": "audio/pcm"}}, "session.input_audio_format"),  # the GA shape, sent as beta
    ({"modalities": [["audio"]]}, "session.modalities"),
])
def test_a_bad_beta_field_is_refused_naming_that_field(session: dict[str, Any], param: str) -> None:
    with pytest.raises(RealtimeProtocolError) as caught:
        SessionSettings().update_beta(session)
    assert caught.value.param == param
    assert caught.value.code == "invalid_value"


def test_a_session_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RealtimeProtocolError) as caught:
        SessionSettings().update_ga("realtime")
    assert caught.value.param == "session"


# -- client events -----------------------------------------------------------------------


def test_a_client_event_is_parsed_from_text_or_bytes() -> None:
    assert parse_client_event('{"type": "input_audio_buffer.commit", "event_id": "e1"}') == {
        "type": "input_audio_buffer.commit", "event_id": "e1"
    }
    assert parse_client_event(b'{"type": "response.create"}') == {"type": "response.create"}


@pytest.mark.parametrize(("text", "code"), [
    ('{"type": "session.update",', "invalid_json"),
    ("not json", "invalid_json"),
    ('[{"type": "session.update"}]', "invalid_event"),
    ('"session.update"', "invalid_event"),
    ('{"session": {}}', "invalid_event"),
    ('{"type": 7}', "invalid_event"),
])
def test_a_malformed_client_event_is_refused_with_its_code(text: str, code: str) -> None:
    with pytest.raises(RealtimeProtocolError) as caught:
        parse_client_event(text)
    assert caught.value.code == code


# -- server events -----------------------------------------------------------------------


@pytest.mark.parametrize(("ga_name", "beta_name"), [
    ("response.output_audio.delta", "response.audio.delta"),
    ("response.output_audio.done", "response.audio.done"),
    ("response.output_audio_transcript.delta", "response.audio_transcript.delta"),
    ("response.output_text.delta", "response.text.delta"),
    ("conversation.item.added", "conversation.item.created"),
    ("response.done", "response.done"),
])
def test_server_events_take_the_dialects_names(ga_name: str, beta_name: str) -> None:
    ga_event = ServerEvents().event(ga_name, response_id="resp_1")
    beta_event = ServerEvents(beta=True).event(ga_name, response_id="resp_1")
    assert ga_event is not None and ga_event["type"] == ga_name and ga_event["response_id"] == "resp_1"
    assert beta_event is not None and beta_event["type"] == beta_name and beta_event["response_id"] == "resp_1"


def test_conversation_item_done_exists_only_in_ga() -> None:
    assert ServerEvents(beta=True).event("conversation.item.done", item={}) is None
    event = ServerEvents().event("conversation.item.done", item={})
    assert event is not None and event["type"] == "conversation.item.done"


def test_every_event_gets_a_fresh_event_id() -> None:
    events = ServerEvents()
    ids = {(events.event("response.created") or {})["event_id"] for _ in range(50)}
    ids |= {events.error("x", "y")["event_id"] for _ in range(50)}
    assert len(ids) == 100


@pytest.mark.parametrize(("is_beta", "adapter", "model"), [
    (False, GA_EVENTS, ga.RealtimeErrorEvent), (True, BETA_EVENTS, beta.ErrorEvent),
])
def test_an_error_event_validates_and_names_the_client_event(is_beta: bool, adapter: pydantic.TypeAdapter[Any],
                                                             model: type) -> None:
    rendered = ServerEvents(beta=is_beta).error(
        "invalid_value", "'session.type' must be 'realtime'", param="session.type", event_id="evt_client_1"
    )
    event = adapter.validate_python(rendered)
    assert isinstance(event, model)
    assert event.error.code == "invalid_value"  # type: ignore[attr-defined]
    assert event.error.param == "session.type"  # type: ignore[attr-defined]
    assert event.error.event_id == "evt_client_1"  # type: ignore[attr-defined]
    assert event.error.type == "invalid_request_error"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("is_beta", "adapter", "model", "audio_part", "text_part"), [
    (False, GA_EVENTS, ga.ConversationItemAdded, "output_audio", "output_text"),
    (True, BETA_EVENTS, beta.ConversationItemCreatedEvent, "audio", "text"),
])
def test_an_assistant_item_validates_in_its_dialect(is_beta: bool, adapter: pydantic.TypeAdapter[Any], model: type,
                                                    audio_part: str, text_part: str) -> None:
    events = ServerEvents(beta=is_beta)
    spoken = events.event("conversation.item.added", previous_item_id="item_0",
                          item=events.assistant_item("item_1", audio=True, text="Paris is lovely.", status="completed"))
    written = events.event("conversation.item.added", previous_item_id="item_1",
                           item=events.assistant_item("item_2", audio=False, text="It has museums.", status="completed"))
    empty = events.event("conversation.item.added", previous_item_id="item_2",
                         item=events.assistant_item("item_3", audio=True, text=None, status="in_progress"))
    parsed = [adapter.validate_python(rendered) for rendered in (spoken, written, empty)]
    assert all(isinstance(event, model) for event in parsed)
    first, second, third = (event.item for event in parsed)
    assert first.role == "assistant" and first.id == "item_1" and parsed[0].previous_item_id == "item_0"
    assert first.content[0].type == audio_part and first.content[0].transcript == "Paris is lovely."
    assert second.content[0].type == text_part and second.content[0].text == "It has museums."
    assert third.status == "in_progress" and third.content == []


@pytest.mark.parametrize(("is_beta", "adapter", "model"), [
    (False, GA_EVENTS, ga.ResponseDoneEvent), (True, BETA_EVENTS, beta.ResponseDoneEvent),
])
def test_a_cancelled_response_done_validates_with_its_reason(is_beta: bool, adapter: pydantic.TypeAdapter[Any],
                                                             model: type) -> None:
    events = ServerEvents(beta=is_beta)
    settings = SessionSettings(max_output_tokens=200)
    item = events.assistant_item("item_1", audio=True, text="Paris is", status="incomplete")
    rendered = events.event("response.done", response=events.response(
        "resp_1", settings, status="cancelled", reason="turn_detected", output=[item]
    ))
    event = adapter.validate_python(rendered)
    assert isinstance(event, model)
    response = event.response  # type: ignore[attr-defined]
    assert response.id == "resp_1" and response.status == "cancelled"
    assert response.status_details.type == "cancelled" and response.status_details.reason == "turn_detected"
    assert response.output[0].id == "item_1" and response.output[0].status == "incomplete"
    assert response.max_output_tokens == 200
    if is_beta:
        assert response.modalities == ["text", "audio"] and response.output_audio_format == "pcm16"
    else:
        assert response.output_modalities == ["audio"]
        assert response.audio.output.format.type == "audio/pcm"


@pytest.mark.parametrize("is_beta", [False, True])
def test_a_completed_text_response_has_no_status_details(is_beta: bool) -> None:
    events = ServerEvents(beta=is_beta)
    settings = SessionSettings(output_modalities=("text",))
    rendered = events.event("response.done", response=events.response("resp_2", settings, status="completed", output=[]))
    event = (BETA_EVENTS if is_beta else GA_EVENTS).validate_python(rendered)
    assert event.response.status == "completed" and event.response.status_details is None
    modalities = event.response.modalities if is_beta else event.response.output_modalities
    assert modalities == ["text"]


@pytest.mark.parametrize(("is_beta", "adapter", "model"), [
    (False, GA_EVENTS, ga.ResponseAudioDeltaEvent), (True, BETA_EVENTS, beta.ResponseAudioDeltaEvent),
])
def test_an_audio_delta_validates_under_its_dialects_name(is_beta: bool, adapter: pydantic.TypeAdapter[Any],
                                                          model: type) -> None:
    rendered = ServerEvents(beta=is_beta).event(
        "response.output_audio.delta", response_id="resp_1", item_id="item_1", output_index=0, content_index=0,
        delta=RealtimeAudioFormat().encode(RealtimeAudioFormat().decode("AAAAAA==")),
    )
    event = adapter.validate_python(rendered)
    assert isinstance(event, model)
    assert event.delta == "AAAAAA=="  # type: ignore[attr-defined]


@pytest.mark.parametrize("text", ["[" * 5000, '{"a":' * 5000])
def test_a_client_event_nested_past_the_decoders_limit_is_invalid_json_not_a_crash(text: str) -> None:
    with pytest.raises(RealtimeProtocolError) as info:
        parse_client_event(text)
    assert info.value.code == "invalid_json"
