"""The WSGI application gunicorn serves: ``tests.adapter.django_app.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.adapter.django_app.settings")

application = get_wsgi_application()
