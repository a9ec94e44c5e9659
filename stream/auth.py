"""Access tokens: who may publish, watch, talk to the agent or administer this server.

A token is an HS256 JWT signed with ``server.secret`` (``VOXLINE_SECRET``). Its claims are
``grants`` (a list of grant strings), ``exp`` and ``iat`` (Unix seconds), ``iss``
(``"voxline"``) and, optionally, ``sub`` (who it was made for). The grants:

==============  ==========================================================
``publish:ID``  send audio into session ``ID`` (captions, a call)
``publish:*``   send audio into any session, new ones included
``watch:ID``    read session ``ID``'s captions
``watch:*``     read any session's captions
``agent``       talk to the voice agent (calls, ``/v1/realtime``)
``admin``       everything, minting tokens (``POST /v1/tokens``) included
==============  ==========================================================

Session ids are ``[A-Za-z0-9_-]{1,64}``. A client sends its token as
``Authorization: Bearer TOKEN`` or, where it cannot set headers (a browser's
WebSocket), as ``?token=TOKEN`` (``?api_key=`` too, which the OpenAI SDK's browser
path and older voxline clients use).

The core is sans-I/O: ``Grant``, ``Need``, ``Claims``, ``mint_token``, ``verify_token``
and ``AccessPolicy.check`` take plain values and a clock. The Starlette helpers at the
bottom only read a connection's headers and query and turn an ``AuthError`` into a
response or a close. With no secret, ``AccessPolicy`` is disabled and every check
passes; the server then binds loopback only (``voxline serve`` says so).

Errors, below ``ProtocolError`` in voxline's tree (``voxline.errors``)::

    ProtocolError
    └── AuthError                 status 401/403, close 4401/4403, code, message
        └── TokenRequestError     (also a ValueError) a bad grant, ttl, subject or no secret: 400/4400

``AuthError.code``: ``missing_token``, ``invalid_token``, ``expired_token`` (401 / 4401),
``forbidden`` (403 / 4403); ``TokenRequestError.code``: ``invalid_grant``,
``invalid_ttl``, ``invalid_request``, ``tokens_off``. A secret shorter than 32 bytes
works but draws PyJWT's ``InsecureKeyLengthWarning``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from voxline.errors import ProtocolError
from voxline.stream.bounded_socket import close_websocket

ALGORITHM = "HS256"
ISSUER = "voxline"
ACTIONS = ("publish", "watch", "agent", "admin")
SCOPED_ACTIONS = ("publish", "watch")
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_GRANTS = 64
MAX_SUBJECT_CHARS = 256
MAX_TOKEN_CHARS = 8192
MAX_TOKEN_REQUEST_BYTES = 16 * 1024
DEFAULT_TTL_S = 600.0


class AuthError(ProtocolError):
    """A request was refused for its token: what the client is told, on HTTP and on a socket.

    ``status`` is the HTTP status (401: no usable token, 403: a valid token lacking the
    grant), ``close_code`` the WebSocket close code (4401 / 4403), ``code`` the
    machine-readable reason and ``message`` a sentence a person can act on.
    """

    def __init__(self, code: str, message: str, *, status: int = 401, close_code: int = 4401) -> None:
        super().__init__(code, message, close_code)
        self.status = status


class TokenRequestError(AuthError, ValueError):
    """A token cannot be made as asked (bad grant, ttl or subject, or no secret): HTTP 400, close 4400."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=400, close_code=4400)


@dataclass(frozen=True, slots=True)
class Need:
    """What a route asks of a token: ``action`` (publish, watch, agent, admin) on ``session_id``.

    ``session_id`` is None for agent and admin, and for publish/watch of a session the
    server has not named yet (only a ``*`` grant covers that).
    """

    action: str
    session_id: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {', '.join(ACTIONS)}")

    @classmethod
    def publish(cls, session_id: str | None = None) -> Need:
        """Sending audio into ``session_id`` (None: a new session the server names)."""
        return cls("publish", session_id)

    @classmethod
    def watch(cls, session_id: str | None = None) -> Need:
        """Reading ``session_id``'s captions (None: any session, e.g. a listing)."""
        return cls("watch", session_id)

    @classmethod
    def agent(cls) -> Need:
        """Talking to the voice agent."""
        return cls("agent")

    @classmethod
    def admin(cls) -> Need:
        """Administering the server (minting tokens)."""
        return cls("admin")

    def __str__(self) -> str:
        if self.action in SCOPED_ACTIONS:
            return f"{self.action}:{self.session_id or '*'}"
        return self.action


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission a token carries; ``scope`` is a session id, ``*`` or None (agent, admin).

    Build one with ``Grant.parse``; ``str(grant)`` gives back the canonical text.
    """

    action: str
    scope: str | None = None

    @classmethod
    def parse(cls, text: object) -> Grant:
        """The grant ``text`` names; ``TokenRequestError`` (``invalid_grant``) says what is wrong."""
        if not isinstance(text, str):
            raise TokenRequestError("invalid_grant", f"a grant is a string such as 'watch:ID', not {text!r}")
        action, colon, scope = text.partition(":")
        if action in ("agent", "admin") and not colon:
            return cls(action)
        if action in SCOPED_ACTIONS and colon:
            if scope == "*" or SESSION_ID.fullmatch(scope):
                return cls(action, scope)
            raise TokenRequestError(
                "invalid_grant", f"bad session id in grant {text!r}: use 1 to 64 of A-Z a-z 0-9 _ -, or *"
            )
        raise TokenRequestError(
            "invalid_grant", f"unknown grant {text!r}; use publish:ID, publish:*, watch:ID, watch:*, agent or admin"
        )

    def allows(self, need: Need) -> bool:
        """Whether this grant covers ``need``: admin covers all, ``*`` any session of its action."""
        if self.action == "admin":
            return True
        if self.action != need.action:
            return False
        if self.action not in SCOPED_ACTIONS:
            return True
        return self.scope == "*" or (need.session_id is not None and self.scope == need.session_id)

    def __str__(self) -> str:
        return self.action if self.scope is None else f"{self.action}:{self.scope}"


def parse_grants(texts: Iterable[object]) -> tuple[Grant, ...]:
    """Grants from their texts (or ``Grant`` objects), duplicates dropped, order kept; refuses none or more than ``MAX_GRANTS``."""
    grants = tuple(dict.fromkeys(text if isinstance(text, Grant) else Grant.parse(text) for text in texts))
    if not grants:
        raise TokenRequestError("invalid_grant", "a token needs at least one grant (e.g. watch:ID)")
    if len(grants) > MAX_GRANTS:
        raise TokenRequestError("invalid_grant", f"a token may carry at most {MAX_GRANTS} grants")
    return grants


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: its grants, when it expires (Unix s) and whom it was made for."""

    grants: tuple[Grant, ...]
    expires_at: float
    subject: str | None = None

    def allows(self, need: Need) -> bool:
        """Whether any of the grants covers ``need``."""
        return any(grant.allows(need) for grant in self.grants)


def mint_token(
    secret: str,
    grants: Iterable[str | Grant],
    ttl_s: float,
    *,
    subject: str | None = None,
    now: float | None = None,
    max_ttl_s: float | None = None,
) -> str:
    """A token signed with ``secret`` carrying ``grants``, valid ``ttl_s`` seconds from ``now``.

    ``now`` defaults to the wall clock (Unix s); ``exp`` is rounded up to a whole second.
    Raises ``TokenRequestError``: ``tokens_off`` for an empty secret, ``invalid_grant``,
    ``invalid_ttl`` (not a positive finite number, or over ``max_ttl_s``) or
    ``invalid_request`` (a subject that is not 1 to ``MAX_SUBJECT_CHARS`` characters).
    """
    if not secret:
        raise TokenRequestError("tokens_off", "no secret is set (VOXLINE_SECRET), so no token can be signed")
    if isinstance(grants, str):
        raise TokenRequestError("invalid_grant", f"grants is a list of grants, not the string {grants!r}")
    parsed = parse_grants(grants)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise TokenRequestError("invalid_ttl", f"the ttl must be a positive number of seconds, not {ttl_s!r}")
    if max_ttl_s is not None and ttl_s > max_ttl_s:
        raise TokenRequestError("invalid_ttl", f"the ttl may be at most {max_ttl_s:g} s on this server (server.token_max_ttl_s)")
    if subject is not None and (not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS):
        raise TokenRequestError("invalid_request", f"subject must be a string of 1 to {MAX_SUBJECT_CHARS} characters")
    issued = time.time() if now is None else now
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "iat": int(issued),
        "exp": math.ceil(issued + ttl_s),
        "grants": [str(grant) for grant in parsed],
    }
    if subject is not None:
        payload["sub"] = subject
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _invalid(message: str) -> AuthError:
    return AuthError("invalid_token", message)


def verify_token(secret: str, token: str | None, *, now: float | None = None) -> Claims:
    """The claims of ``token`` if ``secret`` signed it and it has not expired at ``now`` (Unix s).

    Raises ``AuthError`` (401 / 4401): ``missing_token`` for none; ``invalid_token`` for a
    malformed token, one not signed HS256 (``alg: none`` included), a signature this
    secret did not make, a foreign issuer or bad claims; ``expired_token`` once ``exp``
    has passed. ``TokenRequestError`` (``tokens_off``) for an empty secret.
    """
    if not secret:
        raise TokenRequestError("tokens_off", "no secret is set (VOXLINE_SECRET), so no token can be checked")
    if not token:
        raise AuthError("missing_token", "no access token: send Authorization: Bearer TOKEN, or ?token=TOKEN")
    if len(token) > MAX_TOKEN_CHARS:
        raise _invalid(f"the token is over {MAX_TOKEN_CHARS} characters")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise _invalid("the token is not a well-formed JWT (three base64url parts, a JSON header)") from exc
    alg = header.get("alg")
    if alg != ALGORITHM:
        what = "is unsigned (alg none)" if str(alg).lower() == "none" else f"is signed with {alg!r}"
        raise _invalid(f"the token {what}; this server accepts {ALGORITHM} tokens only")
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "require": ["exp", "iat", "iss", "grants"]},
        )  # exp is checked below, against the caller's clock
    except jwt.InvalidSignatureError as exc:
        raise _invalid("the token's signature does not match this server's secret (forged, or for another server)") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid(f"the token has no {exc.claim!r} claim") from exc
    except jwt.InvalidIssuerError as exc:
        raise _invalid(f"the token was not issued by {ISSUER}") from exc
    except jwt.PyJWTError as exc:
        raise _invalid(f"the token cannot be read: {exc}") from exc
    expires_at, subject = payload["exp"], payload.get("sub")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise _invalid("the token's exp claim is not a number of seconds")
    if subject is not None and not isinstance(subject, str):
        raise _invalid("the token's sub claim is not a string")
    if not isinstance(payload["grants"], list):
        raise _invalid("the token's grants claim is not a list")
    try:
        grants = parse_grants(payload["grants"])
    except TokenRequestError as exc:
        raise _invalid(f"the token carries a bad grant: {exc.message}") from exc
    current = time.time() if now is None else now
    if current >= expires_at:
        when = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise AuthError(
            "expired_token", f"the token expired at {when} ({current - expires_at:.0f} s ago); ask for a new one"
        )
    return Claims(grants=grants, expires_at=float(expires_at), subject=subject)


def _bearer(headers: Mapping[str, str]) -> tuple[str | None, bool]:
    """(the Bearer token or None, whether an Authorization header of another kind was sent)."""
    header = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None, False
    return None, bool(header)


class AccessPolicy:
    """Which tokens this server takes; disabled (every check passes, returning None) without a secret.

    ``clock`` gives the current Unix time in seconds (the wall clock unless a test passes
    another).
    """

    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock

    @property
    def enabled(self) -> bool:
        """Whether tokens are checked (a secret is set)."""
        return bool(self.secret)

    def token_from(self, headers: Mapping[str, str], query_params: Mapping[str, str]) -> str | None:
        """The token a client sent: ``Authorization: Bearer``, else ``?token=``, else ``?api_key=``."""
        bearer, _ = _bearer(headers)
        return bearer or query_params.get("token") or query_params.get("api_key") or None

    def mint(self, grants: Iterable[str | Grant], ttl_s: float, *, subject: str | None = None,
             max_ttl_s: float | None = None) -> str:
        """``mint_token`` with this policy's secret and clock."""
        return mint_token(self.secret, grants, ttl_s, subject=subject, now=self.clock(), max_ttl_s=max_ttl_s)

    def check(self, headers: Mapping[str, str], query_params: Mapping[str, str], need: Need) -> Claims | None:
        """The claims of the client's token if it grants ``need``; None when the policy is disabled.

        Raises ``AuthError``: 401 / 4401 (``missing_token``, ``invalid_token``,
        ``expired_token``) or 403 / 4403 (``forbidden``, naming the grant needed).
        """
        if not self.enabled:
            return None
        token = self.token_from(headers, query_params)
        if token is None and _bearer(headers)[1]:
            raise AuthError("missing_token", "the Authorization header must read 'Bearer TOKEN'")
        claims = verify_token(self.secret, token, now=self.clock())
        if not claims.allows(need):
            raise AuthError("forbidden", f"this token does not grant {need}", status=403, close_code=4403)
        return claims


# Starlette boundary: read a connection, answer a refusal.


def access_policy(connection: HTTPConnection) -> AccessPolicy:
    """The app's ``AccessPolicy`` (``app.state.access``, set by ``create_app``)."""
    policy = getattr(connection.app.state, "access", None)
    if not isinstance(policy, AccessPolicy):
        raise RuntimeError("app.state.access is not an AccessPolicy; create_app sets it")
    return policy


def check_request(request: Request, need: Need) -> Claims | None:
    """``AccessPolicy.check`` on an HTTP request's headers and query; raises ``AuthError``."""
    return access_policy(request).check(request.headers, request.query_params, need)


def check_websocket(websocket: WebSocket, need: Need) -> Claims | None:
    """``AccessPolicy.check`` on a WebSocket's handshake headers and query; raises ``AuthError``."""
    return access_policy(websocket).check(websocket.headers, websocket.query_params, need)


def token_or_loopback_refusal(websocket: WebSocket, need: Need) -> tuple[int, str, str] | None:
    """Why this socket may not connect (close code, error code, message), or None.

    With tokens on, its token must grant ``need``; with them off, it must come from loopback.
    """
    policy = access_policy(websocket)
    if policy.enabled:
        try:
            policy.check(websocket.headers, websocket.query_params, need)
        except AuthError as refused:
            return refused.close_code, refused.code, refused.message
        return None
    host = websocket.client.host if websocket.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        return 4403, "forbidden", "this server has no VOXLINE_SECRET set, so it takes clients on loopback only"
    return None


def refusal_response(err: AuthError) -> JSONResponse:
    """``{"error": {"code", "message"}}`` with ``err.status``; a 401 carries ``WWW-Authenticate: Bearer``."""
    headers = None
    if err.status == 401:  # RFC 6750 §3: no error attribute when no token was sent
        detail = "" if err.code == "missing_token" else ', error="invalid_token"'
        headers = {"WWW-Authenticate": f'Bearer realm="{ISSUER}"{detail}'}
    return JSONResponse({"error": {"code": err.code, "message": err.message}}, status_code=err.status, headers=headers)


async def refuse_websocket(websocket: WebSocket, err: AuthError) -> None:
    """Accept (if not yet) and close with ``err.close_code`` and its message as the reason.

    A socket's own protocol may send an error event first. Bounded, idempotent, and no
    error for a client already gone (``close_websocket``).
    """
    await close_websocket(websocket, err.close_code, err.message)


def _tokens_off() -> JSONResponse:
    return refusal_response(
        TokenRequestError("tokens_off", "this server has no VOXLINE_SECRET, so it signs no tokens")
    )


async def tokens_endpoint(request: Request) -> JSONResponse:
    """``POST /v1/tokens``: mint a token; the caller needs an ``admin`` token.

    Body ``{"grants": [...], "ttl_s": 600, "subject": optional}`` (``ttl_s`` defaults to
    ``DEFAULT_TTL_S``, at most ``server.token_max_ttl_s``). Answers 200
    ``{"token", "expires_at" (Unix s), "grants"}``; 401/403 for the caller's token;
    400 for a bad body, grant or ttl, and ``tokens_off`` when the server has no secret;
    413 for a body over ``MAX_TOKEN_REQUEST_BYTES``.
    """
    policy = access_policy(request)
    if not policy.enabled:
        return _tokens_off()
    try:
        check_request(request, Need.admin())
        body = await request.body()
        if len(body) > MAX_TOKEN_REQUEST_BYTES:
            return JSONResponse(
                {"error": {"code": "invalid_request", "message": f"the body is over {MAX_TOKEN_REQUEST_BYTES} bytes"}},
                status_code=413,
            )
        try:
            decoded: Any = json.loads(body)
        except ValueError as exc:
            raise TokenRequestError("invalid_request", f"the body is not JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise TokenRequestError("invalid_request", 'the body is a JSON object: {"grants": [...], "ttl_s": 600}')
        unknown = sorted(set(decoded) - {"grants", "ttl_s", "subject"})
        if unknown:
            raise TokenRequestError("invalid_request", f"unknown field(s) {', '.join(unknown)}; use grants, ttl_s, subject")
        grants = decoded.get("grants")
        if not isinstance(grants, list):
            raise TokenRequestError("invalid_grant", 'grants is a list of strings, e.g. ["watch:abc"]')
        max_ttl_s = request.app.state.service.config.server.token_max_ttl_s
        ttl_s = decoded.get("ttl_s", DEFAULT_TTL_S)
        token = policy.mint(grants, ttl_s, subject=decoded.get("subject"), max_ttl_s=max_ttl_s)
    except AuthError as err:
        return refusal_response(err)
    claims = verify_token(policy.secret, token, now=policy.clock())
    return JSONResponse({
        "token": token, "expires_at": int(claims.expires_at), "grants": [str(grant) for grant in claims.grants],
    })
