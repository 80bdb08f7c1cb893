"""Settings of the gunicorn workers: where the stores are comes from the environment
(``tests._stores.server_env``): in shared memory by name, or in Redis."""

from tests._stores import store_from_env
from tests.adapter.django_app import cache_name, settings_for

_name, _redis_url, _secret = store_from_env()
globals().update(settings_for(_name))
if _redis_url is not None:
    from shmsession.redis import RedisSessionStorage

    SHMSESSION = {"store": RedisSessionStorage(_name, _redis_url, secret=_secret)}
    CACHES = {"default": {
        "BACKEND": "shmsession.contrib.django.ShmCache",
        "LOCATION": RedisSessionStorage(cache_name(_name), _redis_url, secret=_secret),
    }}
