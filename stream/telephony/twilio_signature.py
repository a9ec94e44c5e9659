"""Twilio's request signature (``X-Twilio-Signature``) on a Media Streams WebSocket upgrade.

Twilio signs every request it makes with the account's auth token: the signature is
base64(HMAC-SHA1(auth_token, URL + the POST parameters sorted by name, each name then
value)). A WebSocket upgrade is a GET, so only the full URL Twilio connected to is
signed, query string included. Behind a proxy that URL is not the one the server sees:
``signed_urls`` builds it from ``telephony.public_url`` when set, and tries it with and
without the default port (Twilio's own helpers do the same).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"wss": 443, "https": 443, "ws": 80, "http": 80}


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a request to ``url`` with POST ``params``."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _with_and_without_port(url: str) -> list[str]:
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port is None and default is not None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port is not None and parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def signed_urls(public_url: str, scheme: str, host: str, path: str, query: str) -> list[str]:
    """The URLs Twilio may have signed for this upgrade: ``public_url`` (or scheme and Host) + path + query."""
    base = public_url.rstrip("/") if public_url else f"{scheme}://{host}"
    url = base + path + (f"?{query}" if query else "")
    return _with_and_without_port(url)


def signature_valid(auth_token: str, signature: str, urls: Iterable[str]) -> bool:
    """True when ``signature`` is Twilio's for one of ``urls`` (compared in constant time)."""
    if not signature:
        return False
    return any(hmac.compare_digest(twilio_signature(auth_token, url), signature) for url in urls)
