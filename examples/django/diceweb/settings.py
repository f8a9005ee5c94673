"""Settings for the dice web example, from the environment.

DICE_NODE          the node, HOST:PORT: an agent's mTLS listener or nginx
                   (default 127.0.0.1:8443, the quickstart's node-1)
DICE_CA            PEM CA bundle that signs node certificates
DICE_CERT          PEM client certificate this site presents
DICE_KEY           its PEM key
DICE_SERVER_NAME   name to check the node's certificate against (default: the host of DICE_NODE)
DICE_TIMEOUT       seconds one roll may take (default 5)
DJANGO_DEBUG       "1" for Django's debug pages
DJANGO_SECRET_KEY  required when DJANGO_DEBUG is not "1" in production; a dev default otherwise
DJANGO_ALLOWED_HOSTS  comma-separated (default 127.0.0.1,localhost)

The certificate defaults are the quickstart's dev PKI (certs/dev/ in the repository).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_CERTS = BASE_DIR.parent.parent / "certs" / "dev"

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dice-web-example-not-a-secret")
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

DICE_NODE = os.environ.get("DICE_NODE", "127.0.0.1:8443")
DICE_CA = os.environ.get("DICE_CA", str(DEV_CERTS / "ca.pem"))
DICE_CERT = os.environ.get("DICE_CERT", str(DEV_CERTS / "client.pem"))
DICE_KEY = os.environ.get("DICE_KEY", str(DEV_CERTS / "client-key.pem"))
DICE_SERVER_NAME = os.environ.get("DICE_SERVER_NAME") or None
DICE_TIMEOUT = float(os.environ.get("DICE_TIMEOUT", "5"))

# No database, sessions or users: the page only talks to a node.
INSTALLED_APPS = ["diceweb"]
DATABASES = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "diceweb.urls"
WSGI_APPLICATION = "diceweb.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {},
    }
]
TIME_ZONE = "UTC"
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"diceweb": {"handlers": ["console"], "level": "INFO"}},
}
