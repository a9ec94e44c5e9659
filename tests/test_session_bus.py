"""Session logs, replay, and admission: the rules viewers and new sessions meet."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import time

from voxline.config import load_config
from voxline.stream.admission import CpuLoad, SessionAdmission
from voxline.stream.sessions.log import LocalBus, compact_replay, local_replay


def caption(kind: str, text: str, utterance: int) -> dict[str, object]:
    return {"type": kind, "text": text, "utterance": utterance}


async def test_a_replay_keeps_every_final_and_only_the_partial_still_open() -> None:
    log = LocalBus("n").open("captions")
    for event in (caption("partial", "the", 0), caption("final", "The fox.", 0),
                  caption("partial", "a", 1), caption("partial", "a dog", 1)):
        log.publish(event)
    replay = compact_replay(log.since(0))
    assert [(e.type, e.body()["text"]) for e in replay] == [("final", "The fox."), ("partial", "a dog")]


async def test_an_ended_log_keeps_only_what_a_replay_shows_and_replays_the_same() -> None:
    log = LocalBus("n").open("captions")
    for i in range(50):
        for words in ("the", "the fox", "the fox ran"):
            log.publish(caption("partial", words, i))
        log.publish(caption("final", f"The fox ran {i}.", i))
    log.publish(caption("partial", "never finished", 50))
    before = [(e.seq, e.text) for e in compact_replay(log.since(0))]
    log.end()
    after = [(e.seq, e.text) async for e in local_replay(log, from_start=True)]
    assert after[:-1] == [item for item in before if "never finished" not in item[1]]
    assert len(log.events) == 51 and all(e.type != "partial" for e in log.events), "partials dropped at the end"
    assert [f["text"] for f in log.transcript()][-1] == "The fox ran 49."


async def test_finals_rolled_out_of_a_bounded_log_still_reach_a_late_viewer() -> None:
    log = LocalBus("n", maxlen=4).open("captions")
    for i in range(3):
        log.publish(caption("final", f"sentence {i}.", i))
        for _ in range(3):
            log.publish(caption("partial", "noise", i + 1))
    log.end()
    got = [e async for e in local_replay(log, from_start=True)]
    assert [e.body()["text"] for e in got if e.type == "final"] == ["sentence 0.", "sentence 1.", "sentence 2."]
    assert got[-1].type == "end" and [e.seq for e in got] == sorted(e.seq for e in got)


async def test_a_live_viewer_gets_each_event_once_then_the_end() -> None:
    log = LocalBus("n").open("captions")
    log.publish(caption("final", "before.", 0))
    viewer = asyncio.create_task(_collect(log, from_start=False))
    await asyncio.sleep(0)
    log.publish(caption("final", "after.", 1))
    log.end()
    got = await asyncio.wait_for(viewer, 2)
    assert [(e.type, e.body().get("text")) for e in got] == [("final", "after."), ("end", None)]


async def _collect(log, from_start: bool):  # type: ignore[no-untyped-def]
    return [e async for e in local_replay(log, from_start)]


def test_new_sessions_are_refused_over_the_cpu_limit_and_at_the_session_limit() -> None:
    config = load_config(env={})
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, max_cpu_load=0.7, max_sessions=1))
    service = SessionAdmission(config, engines=object())  # type: ignore[arg-type]
    service.cpu.samples.extend([0.95] * 5)
    assert not service.admit() and "CPU is at 95%" in service.refusal
    service.cpu.samples.extend([0.2] * 5)
    assert service.admit() and not service.admit() and "limit of 1 sessions" in service.refusal



def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_load_counts_the_nodes_own_processes_not_the_machines() -> None:
    """A busy child counts toward the node's load; an equally busy process outside its tree does not."""
    context = multiprocessing.get_context("spawn")
    outsider = context.Process(target=time.sleep, args=(30,))  # a tree with nothing busy in it
    outsider.start()
    busy_child = context.Process(target=_burn, args=(3.0,))
    busy_child.start()
    try:
        ours = CpuLoad(window_s=2.5)  # rooted at this process: the child is in its tree
        theirs = CpuLoad(window_s=2.5, root_pid=outsider.pid)
        ours.cpu_seconds_since_last(), theirs.cpu_seconds_since_last()
        time.sleep(1.0)  # the child burns; this process and the outsider sleep
        assert ours.cpu_seconds_since_last() >= 0.4
        assert theirs.cpu_seconds_since_last() < 0.1
        _burn(0.3)  # the root's own time counts too
        assert ours.cpu_seconds_since_last() >= 0.3
    finally:
        for process in (busy_child, outsider):
            process.terminate()
            process.join(5)


def test_stored_events_no_node_wrote_are_refused_as_malformed_not_raised_on_as_anything_else() -> None:
    import json

    import pytest

    from voxline.stream.sessions.log import BusEvent, MalformedEvent

    good = json.dumps({"type": "final", "text": "hi", "seq": 3})
    assert BusEvent.parse(good).seq == 3
    for text in (None, "", "{", "[" * 5000, "[]", '"final"', '{"type": "final"}', '{"type": "final", "seq": "3"}',
                 '{"type": "final", "seq": 0}', '{"type": "final", "seq": true}', '{"type": 3, "seq": 3}'):
        with pytest.raises(MalformedEvent):
            BusEvent.parse(text)


def test_a_registry_entry_with_fields_missing_or_malformed_reads_with_defaults_and_the_keys_id() -> None:
    from voxline.stream.sessions.log import SessionInfo

    info = SessionInfo.from_fields({"id": "other", "kind": "nope", "started_at": "nan"}, "abc")
    assert (info.id, info.kind, info.node, info.started_at) == ("abc", "captions", "", 0.0)
    assert SessionInfo.from_fields({"started_at": "x"}, "abc").started_at == 0.0


def test_the_mirror_keeps_only_stream_entries_a_node_wrote_and_placement_only_well_formed_nodes() -> None:
    import json

    from voxline.stream.sessions.redis_bus import _entry_event, _node_entry

    event = json.dumps({"type": "final", "seq": 4})
    assert _entry_event("4-0", {"e": event}) is not None
    assert _entry_event("5-0", {"e": event}) is None  # its seq is not its entry id's
    assert _entry_event("4-0", {"x": event}) is None
    assert _entry_event("4-0", {"e": "not json"}) is None
    report = {"headroom": True, "sessions": 1, "max_sessions": 4}
    assert _node_entry({"node_id": "n", "url": "u", "report": json.dumps(report)}) == {**report, "node_id": "n", "url": "u"}
    assert _node_entry({"url": "u", "report": json.dumps(report)}) is None
    for bad in ("[1]", "{", '{"sessions": NaN}', '{"cpu_load": "high"}', '{"sessions": Infinity}'):
        assert _node_entry({"node_id": "n", "report": bad}) is None


async def test_a_viewer_of_a_remote_session_whose_entries_expire_as_it_starts_gets_end_not_an_error() -> None:
    """Found by bench/fuzz.py: the session was looked up, then gone before its stream was read."""
    import redis.asyncio as aioredis

    from voxline.config import BusConfig
    from voxline.stream.sessions.redis_bus import RedisBus, _key

    config = BusConfig(redis_url="redis://127.0.0.1:6379/0", node_id="viewer-node", heartbeat_s=0.2, ttl_s=0.6)
    bus = RedisBus(config, LocalBus("viewer-node"), "http://127.0.0.1:1", lambda: {})
    client = aioredis.Redis.from_url(config.redis_url, decode_responses=True)
    session_id = f"expiring-{time.time_ns()}"
    try:
        await client.hset(_key("session", session_id), mapping={
            "id": session_id, "kind": "captions", "node": "gone-node", "started_at": "1.0", "owner": "", "ended": "0"})
        info, live = await bus.session(session_id)
        await client.delete(_key("session", session_id))  # its node's entries expired meanwhile
        async with asyncio.timeout(10):
            got = [e.body() async for e in bus.follow(info, from_start=True)]
    finally:
        await client.delete(_key("session", session_id), _key("stream", session_id))
        await client.aclose()
        await bus.redis.aclose()
    assert live and [(e["type"], e["reason"]) for e in got] == [("end", "node_lost")]
