"""A tiny Django project for tests/adapter/test_django.py: settings, URLs and views.

The in-process tests call ``settings.configure(**settings_for(...))``; the gunicorn workers
load ``tests.adapter.django_app.settings``, which builds the same settings from the environment
(with the stores in Redis when it says so).
"""

from __future__ import annotations

from typing import Any, Dict

STORE_SIZE = 4 * 2**20


def cache_name(name: str) -> str:
    """The cache's store name beside the sessions' store ``name``."""
    return f"{name}-cache"


def settings_for(name: str) -> Dict[str, Any]:
    """Settings with sessions in store ``name`` and the default cache in ``cache_name(name)``."""
    return dict(
        DEBUG=False,
        SECRET_KEY="shmsession-tests-only-not-a-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        ROOT_URLCONF="tests.adapter.django_app.urls",
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        DATABASES={},
        USE_TZ=True,
        SESSION_ENGINE="shmsession.contrib.django",
        SHMSESSION={"name": name, "size": STORE_SIZE},
        CACHES={
            "default": {
                "BACKEND": "shmsession.contrib.django.ShmCache",
                "LOCATION": cache_name(name),
                "OPTIONS": {"size": STORE_SIZE},
            }
        },
    )
