"""WSGI entry point, for serving the example with a real WSGI server."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diceweb.settings")

application = get_wsgi_application()
