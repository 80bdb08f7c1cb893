"""Django's own backend tests declared on shmsession, as Django declares them on its own
backends in ``tests/cache/tests.py`` (``LocMemCacheTests``, ``RedisCacheTests``) and
``tests/sessions_tests/tests.py`` (``CacheSessionTests``...): nothing subclassed but the mixins,
nothing overridden."""

from cache.tests import BaseCacheTests, caches_setting_for_tests
from django.conf import settings
from django.test import SimpleTestCase, TestCase, override_settings
from sessions_tests.tests import SessionTestsMixin

from shmsession.contrib.django import SessionStore


# Every alias on the one store, as the tests expect of a shared backend (LocMemCacheTests has
# to patch its caches together to get that). The culling aliases are left out, as for Redis and
# memcached: MAX_ENTRIES and CULL_FREQUENCY are not options of this backend (the store evicts
# by itself), so Django's culling tests skip with its own "Culling isn't implemented.".
@override_settings(
    CACHES=caches_setting_for_tests(
        base=settings.CACHES["default"],
        exclude={"cull", "zero_cull"},
    )
)
class ShmCacheTests(BaseCacheTests, TestCase):
    pass


class ShmSessionTests(SessionTestsMixin, SimpleTestCase):
    backend = SessionStore
