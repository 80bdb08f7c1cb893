"""The demo's HTTP client: the standard library's (``urllib.request``), with a
``http.cookiejar`` for the scripted browser. Every request goes over a new connection, so
that any worker may take it.
"""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

#: Seconds one request may take, connect to last byte.
REQUEST_TIMEOUT = 10.0


class DemoError(Exception):
    """The demo could not run (as opposed to: it ran and a check failed)."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer as the client saw it."""

    status: int
    body: Dict[str, Any]
    set_cookies: Tuple[str, ...]

    @property
    def pid(self) -> Optional[int]:
        pid = self.body.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def session(self) -> Dict[str, Any]:
        session = self.body.get("session")
        return session if isinstance(session, dict) else {}


def _opener(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    # No proxy: the server is on 127.0.0.1, which a proxy named in the environment cannot
    # reach.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)


_PLAIN = _opener()


def _send(opener: urllib.request.OpenerDirector, port: int, method: str, target: str,
          headers: Dict[str, str]) -> Answer:
    url = f"http://127.0.0.1:{port}{target}"
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        response = opener.open(request, timeout=REQUEST_TIMEOUT)
    except urllib.error.HTTPError as error:  # 4xx and 5xx: an answer all the same
        response = error
    with response:
        status: int = response.status
        raw: bytes = response.read()
        set_cookies = tuple(response.headers.get_all("Set-Cookie") or ())
    try:
        body = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise DemoError(f"{method} {target}: {status}, not JSON: {raw[:200]!r}") from None
    if not isinstance(body, dict):
        raise DemoError(f"{method} {target}: {status}, not a JSON object: {body!r}")
    return Answer(status, body, set_cookies)


def request(port: int, method: str, target: str, cookie: Optional[str] = None) -> Answer:
    """Send one request, with ``cookie`` as its ``Cookie`` header and no cookie jar, and read
    the answer.

    Raises ``OSError`` (incl. timeouts) when the server does not answer, ``DemoError`` when
    it answers something that is not a JSON object.
    """
    return _send(_PLAIN, port, method, target, {} if cookie is None else {"Cookie": cookie})


class Browser:
    """A client that keeps cookies as a browser does, in a :class:`http.cookiejar.CookieJar`
    (``Max-Age=0`` deletes one). Its requests may be sent from several threads at once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.jar = http.cookiejar.CookieJar()
        self._opener = _opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> Optional[str]:
        """The value of cookie ``name``, or None when the browser holds none."""
        return next((c.value for c in self.jar if c.name == name), None)

    def send(self, method: str, target: str) -> Answer:
        """Like :func:`request`, with the browser's cookies, keeping those it is sent."""
        return _send(self._opener, self.port, method, target, {})
