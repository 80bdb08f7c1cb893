"""Settings of the gunicorn workers: the store name comes from the environment."""

import os

from tests.django_app import ENV_NAME, settings_for

globals().update(settings_for(os.environ[ENV_NAME]))
