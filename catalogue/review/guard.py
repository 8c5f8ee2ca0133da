"""What the review server checks before it reads or writes anything: who may ask, and what a request may hold.

Any web page open in the reviewer's browser can send requests to a server on 127.0.0.1, so the server trusts
no request for being local:

- **Host**: the ``Host`` header must name the address the server is bound to (for a loopback address: any
  loopback name) and its port, so a page on another name that resolves to 127.0.0.1 (DNS rebinding) is refused.
  A server bound to every interface (``0.0.0.0``) cannot know its names and accepts any Host; it requires the
  token for every request instead.
- **Origin**: a request that carries an ``Origin`` (every browser sends one with a POST) must come from the
  server's own origin; ``Sec-Fetch-Site``, when sent, must be ``same-origin`` or ``none`` for a write, and for
  every read but the page itself (``/``, which a link may open): a page on another origin (``cross-site``, or
  ``same-site``, which another port of localhost is) can neither load a photo, a heatmap or a match picture (so
  it cannot tell which ids exist, nor make the server compute) nor read the queue. Browsers without
  ``Sec-Fetch-Site`` (before 2020-2023 releases) can still *embed* a photo from another page, never read it.
- **Token**: every write carries the server's token in the ``X-Whaleid-Token`` header. The token is made
  fresh at each start (or given with ``--token``) and written into the page the server serves, which another
  origin cannot read; a form or a ``no-cors`` fetch from another page cannot set the header. Off loopback,
  every request needs it (the header, or ``?token=`` in the URL: the address ``whaleid review`` prints).
- **Shape**: a write's ``Content-Type`` is ``application/json``; its body is at most ``MAX_BODY`` bytes (413
  beyond), one JSON object of known keys, without NaN or Infinity, not nested deeper than JSON needs (400).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

MAX_BODY = 64 * 1024  # bytes of a decision's body
MIN_TOKEN = 16  # visible characters of a token given with --token
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "x-whaleid-token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str) -> str:
    """``token`` when it is at least ``MIN_TOKEN`` visible ASCII characters (no spaces), else ``ValueError``."""
    if not (len(token) >= MIN_TOKEN and token.isascii() and token.isprintable() and not any(c.isspace() for c in token)):
        raise ValueError(f"--token must be at least {MIN_TOKEN} visible ASCII characters without spaces (or "
                         "`generate`); got one of {len(token)} characters")
    return token


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


class Guard:
    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, int(port), token
        self.reads_need_token = not is_loopback(host)
        names = set(LOOPBACK_NAMES) | {host.strip("[]")} if is_loopback(host) else {host.strip("[]").lower()}
        self.names = {n.lower() for n in names}

    def host_ok(self, header: Optional[str]) -> bool:
        if is_wildcard(self.host):
            return True
        if not header:
            return False
        name, port = _split_host(header.strip().lower())
        return name in self.names and port == self.port

    def refuse(self, request: Request, write: bool) -> Optional[Response]:
        """None when ``request`` may go on; else the response that refuses it."""
        headers = request.headers
        if not self.host_ok(headers.get("host")):
            return _error(f"the Host header {_short(headers.get('host'))} does not name this server "
                          f"({self.host}:{self.port})", 400)
        origin = headers.get("origin")
        if origin is not None and not self.origin_ok(origin, headers.get("host")):
            return _error(f"requests from {_short(origin)} are refused: only this server's own page may use it", 403)
        site = headers.get("sec-fetch-site")
        if write and site is not None and site not in ("same-origin", "none"):
            return _error(f"a {site} request cannot decide: only this server's own page may", 403)
        if not write and site in ("cross-site", "same-site") and request.url.path != "/":
            return _error(f"a {site} request cannot read the catalogue's photos or data: only this server's own page "
                          "may", 403)
        if write or self.reads_need_token:
            given = headers.get(TOKEN_HEADER) or ("" if write else request.query_params.get("token", ""))
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode()):
                return _error("this request needs the server's token (the page carries it; off loopback, open the "
                              "address whaleid review printed)", 403)
        if write:
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return _error(f"a decision is sent as application/json, not {_short(kind) or 'no content type'}", 415)
        return None

    def origin_ok(self, origin: str, host_header: Optional[str]) -> bool:
        if not host_header:
            return False
        return origin.strip().lower() == f"http://{host_header.strip().lower()}"


def _split_host(value: str) -> tuple[str, Optional[int]]:
    if value.startswith("["):  # [::1]:8765
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    try:
        return name, int(port) if port else 80
    except ValueError:
        return name, None


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _error(message: str, status: int, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers or None)


async def json_object(request: Request, keys: tuple) -> dict | Response:
    """The request's body as a JSON object with only ``keys``, or the 4xx response that says why not."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return _error(f"the request body is over {MAX_BODY} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return _error(f"the request body is over {MAX_BODY} bytes", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        return _error(f"the request body is not JSON ({_short(str(exc), 120)})", 400)
    if not isinstance(body, dict):
        return _error("the request body must be a JSON object", 400)
    unknown = sorted(k for k in body if k not in keys)
    if unknown:
        return _error(f"unknown fields {_short(unknown)}; expected some of {', '.join(keys)}", 400)
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")
