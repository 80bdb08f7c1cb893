"""Settings for Django's own cache and session tests on shmsession (see run.py), as Django's
``tests/runtests.py`` and ``tests/test_sqlite.py`` set them up, trimmed to the apps these two
suites import. The stores and the database's folder come from the environment."""

import os

SECRET_KEY = "django_tests_secret_key"
DEBUG = False
USE_TZ = False
LANGUAGE_CODE = "en"
SITE_ID = 1
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "cache",  # Django's tests/cache: the Poll model
    "sessions_tests",  # Django's tests/sessions_tests: the custom session model
]
# As runtests.py: no migrations for the contrib apps, their tables are made from the models.
MIGRATION_MODULES = {"auth": None, "contenttypes": None, "sessions": None}
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(os.environ["SHMSESSION_SUITE_DB_DIR"], "db.sqlite3"),
    }
}

STORE_SIZE = 16 * 2**20
#: The default cache, which Django's cache-backed session engines use.
CACHES = {
    "default": {
        "BACKEND": "shmsession.contrib.django.ShmCache",
        "LOCATION": os.environ["SHMSESSION_SUITE_CACHE"],
        "OPTIONS": {"size": STORE_SIZE},
    }
}
SESSION_ENGINE = "shmsession.contrib.django"
SHMSESSION = {"name": os.environ["SHMSESSION_SUITE_SESSIONS"], "size": STORE_SIZE}
