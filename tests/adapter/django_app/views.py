"""Views of the test app. Every answer is JSON with the answering process's ``pid``; a
request whose session has no ``user`` gets 401 ``{"anonymous": true}`` (except login)."""

from __future__ import annotations

import json
import os
from typing import Any

from django.contrib.auth import SESSION_KEY
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from shmsession.contrib import django as shm_django


def _answer(status: int = 200, **fields: Any) -> JsonResponse:
    return JsonResponse(dict(fields, pid=os.getpid()), status=status)


def _anonymous(request: HttpRequest) -> bool:
    return "user" not in request.session


@require_POST
def login(request: HttpRequest) -> JsonResponse:
    """``POST /login/?user=NAME``: a new session (new key) holding ``user`` and ``n = 0``."""
    request.session.cycle_key()
    request.session["user"] = request.GET["user"]
    request.session["n"] = 0
    return _answer(user=request.session["user"])


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    """``GET /whoami/``: the whole session."""
    if _anonymous(request):
        return _answer(401, anonymous=True)
    return _answer(session=dict(request.session.items()))


@require_POST
def incr(request: HttpRequest) -> JsonResponse:
    """``POST /incr/``: read-modify-write of the session's counter ``n``."""
    if _anonymous(request):
        return _answer(401, anonymous=True)
    request.session["n"] = request.session["n"] + 1
    return _answer(n=request.session["n"])


@require_POST
def put(request: HttpRequest) -> JsonResponse:
    """``POST /put/`` with a JSON object: the session becomes exactly that object."""
    if _anonymous(request):
        return _answer(401, anonymous=True)
    data = json.loads(request.body)
    request.session.clear()
    request.session.update(data)
    return _answer(session=dict(request.session.items()))


@require_POST
def logout(request: HttpRequest) -> JsonResponse:
    """``POST /logout/``: ``session.flush()`` deletes the session from the store."""
    request.session.flush()
    return _answer(logged_out=True)


@require_POST
def signin(request: HttpRequest) -> JsonResponse:
    """``POST /signin/?user=ID``: what ``django.contrib.auth.login`` does to the session,
    without a database of users: a new key, and the user's id under ``SESSION_KEY``."""
    request.session.cycle_key()
    request.session[SESSION_KEY] = request.session["user"] = request.GET["user"]
    request.session["n"] = 0
    return _answer(user=request.session["user"])


@require_POST
def logout_everywhere(request: HttpRequest) -> JsonResponse:
    """``POST /logout-everywhere/``: ends every session of the signed-in user;
    ``?keep=1``: but this one."""
    if SESSION_KEY not in request.session:
        return _answer(401, anonymous=True)
    keep = request.session if request.GET.get("keep") else None
    return _answer(revoked=shm_django.logout_everywhere(request.session[SESSION_KEY],
                                                        keep=keep))


@require_POST
def cache_incr(request: HttpRequest) -> JsonResponse:
    """``POST /cache/incr/``: ``cache.incr("hits")`` on the default (ShmCache) cache."""
    cache.add("hits", 0, None)
    return _answer(hits=cache.incr("hits"))
