"""Access tokens: what a client with a token may do, and what it is told when refused."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import jwt
import pytest
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxline import cli
from voxline.config import Config, load_config
from voxline.stream.auth import (
    AccessPolicy,
    AuthError,
    Grant,
    Need,
    TokenRequestError,
    check_websocket,
    mint_token,
    parse_grants,
    refuse_websocket,
    tokens_endpoint,
    verify_token,
)

SECRET = "a-test-secret-of-thirty-two-bytes!!"
OTHER_SECRET = "another-secret-of-thirty-two-bytes!"
NOW = 1_700_000_000.0


def refusal(secret: str, token: str | None, *, now: float = NOW) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verify_token(secret, token, now=now)
    return caught.value


def test_a_minted_token_verifies_with_its_grants_expiry_and_subject() -> None:
    token = mint_token(SECRET, ["watch:abc", "agent"], 600, subject="alice", now=NOW)
    claims = verify_token(SECRET, token, now=NOW + 599)
    assert [str(g) for g in claims.grants] == ["watch:abc", "agent"]
    assert claims.expires_at == NOW + 600 and claims.subject == "alice"
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload["iss"] == "voxline" and payload["iat"] == int(NOW)


@pytest.mark.parametrize("text", ["watch", "watch:", "publish:a b", "publish:" + "x" * 65, "root", "agent:x", "admin:*"])
def test_a_bad_grant_is_refused_with_its_text_in_the_message(text: str) -> None:
    with pytest.raises(ValueError, match="grant") as caught:
        Grant.parse(text)
    assert isinstance(caught.value, TokenRequestError) and caught.value.code == "invalid_grant"
    assert caught.value.status == 400


def test_every_grant_form_round_trips_through_its_text() -> None:
    texts = ["publish:sess-1", "publish:*", "watch:A_b", "watch:*", "agent", "admin"]
    assert [str(g) for g in parse_grants(texts)] == texts


@pytest.mark.parametrize(("secret", "grants", "ttl"), [("", ["agent"], 60), (SECRET, [], 60), (SECRET, ["agent"], 0),
                                                       (SECRET, ["agent"], -5), (SECRET, ["agent"], float("nan"))])
def test_minting_refuses_no_secret_no_grants_and_a_ttl_that_is_not_positive(
    secret: str, grants: list[str], ttl: float,
) -> None:
    with pytest.raises(TokenRequestError):
        mint_token(secret, grants, ttl)


def test_grants_allow_their_own_session_any_session_for_a_star_and_everything_for_admin() -> None:
    def allows(grant: str, need: Need) -> bool:
        return Grant.parse(grant).allows(need)

    assert allows("watch:A", Need.watch("A")) and not allows("watch:A", Need.watch("B"))
    assert not allows("watch:A", Need.publish("A")) and not allows("publish:A", Need.watch("A"))
    assert allows("watch:*", Need.watch("B")) and allows("publish:*", Need.publish(None))
    assert not allows("publish:A", Need.publish(None))
    assert allows("agent", Need.agent()) and not allows("agent", Need.watch("A")) and not allows("agent", Need.admin())
    assert all(allows("admin", need) for need in (Need.watch("A"), Need.publish(), Need.agent(), Need.admin()))


def test_a_watch_token_for_one_session_is_forbidden_from_another_with_the_grant_named() -> None:
    policy = AccessPolicy(SECRET, clock=lambda: NOW)
    token = mint_token(SECRET, ["watch:A"], 600, now=NOW)
    headers = {"authorization": f"Bearer {token}"}
    assert policy.check(headers, {}, Need.watch("A")) is not None
    with pytest.raises(AuthError) as caught:
        policy.check(headers, {}, Need.watch("B"))
    assert (caught.value.status, caught.value.close_code, caught.value.code) == (403, 4403, "forbidden")
    assert caught.value.message == "this token does not grant watch:B"


def test_an_expired_token_is_refused_as_expired() -> None:
    token = mint_token(SECRET, ["agent"], 60, now=NOW)
    err = refusal(SECRET, token, now=NOW + 61)
    assert (err.status, err.close_code, err.code) == (401, 4401, "expired_token")
    assert "expired" in err.message


def test_a_token_signed_with_another_secret_is_refused_as_forged() -> None:
    err = refusal(SECRET, mint_token(OTHER_SECRET, ["admin"], 60, now=NOW))
    assert (err.status, err.close_code, err.code) == (401, 4401, "invalid_token")
    assert "signature" in err.message


def test_an_unsigned_alg_none_token_is_refused() -> None:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"iss": "voxline", "iat": int(NOW), "exp": int(NOW) + 600, "grants": ["admin"]}
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    err = refusal(SECRET, unsigned)
    assert err.code == "invalid_token" and "alg none" in err.message


def test_a_token_signed_with_another_hmac_is_refused_by_its_alg() -> None:
    other = jwt.encode({"iss": "voxline", "iat": int(NOW), "exp": int(NOW) + 600, "grants": ["admin"]},
                       SECRET * 2, algorithm="HS512")
    err = refusal(SECRET, other)
    assert err.code == "invalid_token" and "HS512" in err.message


def test_garbage_missing_and_foreign_tokens_each_get_their_own_message() -> None:
    messages = {
        refusal(SECRET, "not-a-token").message,
        refusal(SECRET, jwt.encode({"iat": int(NOW), "exp": int(NOW) + 60, "grants": ["admin"]}, SECRET)).message,
        refusal(SECRET, jwt.encode({"iss": "voxline", "iat": int(NOW), "exp": int(NOW) + 60, "grants": ["root"]},
                                   SECRET)).message,
        refusal(SECRET, jwt.encode({"iss": "other", "iat": int(NOW), "exp": int(NOW) + 60, "grants": ["admin"]},
                                   SECRET)).message,
    }
    assert len(messages) == 4
    assert refusal(SECRET, None).code == "missing_token"


def test_the_token_is_taken_from_the_bearer_header_first_then_the_query() -> None:
    policy = AccessPolicy(SECRET)
    assert policy.token_from({"authorization": "Bearer from-header"}, {"token": "from-query"}) == "from-header"
    assert policy.token_from({}, {"token": "from-query"}) == "from-query"
    assert policy.token_from({}, {"api_key": "from-sdk"}) == "from-sdk"
    assert policy.token_from({"authorization": "Basic dXNlcg=="}, {}) is None
    token = mint_token(SECRET, ["watch:*"], 600)
    assert policy.check({}, {"token": token}, Need.watch("x")) is not None
    assert policy.check({"authorization": f"bearer {token}"}, {}, Need.watch("x")) is not None


def test_no_token_is_a_401_that_says_how_to_send_one() -> None:
    with pytest.raises(AuthError) as caught:
        AccessPolicy(SECRET).check({}, {}, Need.watch("x"))
    assert caught.value.status == 401 and caught.value.code == "missing_token"
    assert "Bearer" in caught.value.message and "?token=" in caught.value.message


def test_without_a_secret_the_policy_is_off_and_every_check_passes() -> None:
    policy = AccessPolicy("")
    assert not policy.enabled
    assert policy.check({}, {}, Need.admin()) is None


def test_voxline_token_prints_one_token_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VOXLINE_SECRET", SECRET)
    assert cli.main(["token", "--grant", "watch:abc", "--grant", "agent", "--ttl", "120", "--subject", "bob"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    claims = verify_token(SECRET, out.strip())
    assert [str(g) for g in claims.grants] == ["watch:abc", "agent"] and claims.subject == "bob"
    assert 0 < claims.expires_at - time.time() <= 121


def test_voxline_token_without_a_secret_or_with_a_bad_grant_fails_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("VOXLINE_SECRET", raising=False)
    monkeypatch.delenv("VOXLINE_SERVER__SECRET", raising=False)
    assert cli.main(["token", "--grant", "agent"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "VOXLINE_SECRET" in captured.err
    monkeypatch.setenv("VOXLINE_SECRET", SECRET)
    assert cli.main(["token", "--grant", "root"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "'root'" in captured.err


@dataclass
class StandInService:
    config: Config


def tokens_app(secret: str) -> TestClient:
    app = Starlette(routes=[Route("/v1/tokens", tokens_endpoint, methods=["POST"])])
    app.state.access = AccessPolicy(secret)
    app.state.service = StandInService(load_config(env={"VOXLINE_SECRET": secret}))
    return TestClient(app)


def test_an_admin_token_mints_a_token_over_http() -> None:
    admin = mint_token(SECRET, ["admin"], 600)
    with tokens_app(SECRET) as client:
        response = client.post("/v1/tokens", json={"grants": ["watch:abc"], "ttl_s": 300},
                               headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["grants"] == ["watch:abc"] and 0 < body["expires_at"] - time.time() <= 301
    assert verify_token(SECRET, body["token"]).allows(Need.watch("abc"))


def test_minting_over_http_refuses_a_non_admin_no_token_and_bad_requests() -> None:
    watcher = mint_token(SECRET, ["watch:*"], 600)
    admin = {"Authorization": f"Bearer {mint_token(SECRET, ['admin'], 600)}"}
    with tokens_app(SECRET) as client:
        forbidden = client.post("/v1/tokens", json={"grants": ["admin"]}, headers={"Authorization": f"Bearer {watcher}"})
        missing = client.post("/v1/tokens", json={"grants": ["admin"]})
        bad_grant = client.post("/v1/tokens", json={"grants": ["root"]}, headers=admin)
        too_long = client.post("/v1/tokens", json={"grants": ["agent"], "ttl_s": 86401}, headers=admin)
        not_json = client.post("/v1/tokens", content=b"{", headers=admin)
    assert forbidden.status_code == 403 and forbidden.json()["error"] == {
        "code": "forbidden", "message": "this token does not grant admin"}
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_token"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert bad_grant.status_code == 400 and bad_grant.json()["error"]["code"] == "invalid_grant"
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_ttl"
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_request"


def test_a_server_without_a_secret_signs_no_tokens() -> None:
    with tokens_app("") as client:
        response = client.post("/v1/tokens", json={"grants": ["agent"]})
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "tokens_off",
                                         "message": "this server has no VOXLINE_SECRET, so it signs no tokens"}}


async def watch_socket(websocket: WebSocket) -> None:
    try:
        check_websocket(websocket, Need.watch(websocket.path_params["session_id"]))
    except AuthError as err:
        await refuse_websocket(websocket, err)
        return
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close()


def test_a_socket_takes_the_token_from_the_query_and_closes_4401_or_4403_with_the_reason() -> None:
    app = Starlette(routes=[WebSocketRoute("/watch/{session_id}", watch_socket)])
    app.state.access = AccessPolicy(SECRET)
    token = mint_token(SECRET, ["watch:A"], 600)
    with TestClient(app) as client:
        with client.websocket_connect(f"/watch/A?token={token}") as ws:
            assert ws.receive_text() == "welcome"
        closes = []
        for path in (f"/watch/B?token={token}", "/watch/A"):
            with client.websocket_connect(path) as ws, pytest.raises(WebSocketDisconnect) as caught:
                ws.receive_text()
            closes.append((caught.value.code, caught.value.reason))
    assert closes == [(4403, "this token does not grant watch:B"),
                      (4401, "no access token: send Authorization: Bearer TOKEN, or ?token=TOKEN")]
