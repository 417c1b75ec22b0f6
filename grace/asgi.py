"""ASGI entry point: HTTP through the body limit and security headers (grace/http_guard.py)
to Django (grace/asgi_handler.py) on a reused request thread (grace/request_threads.py),
websockets through Channels."""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application() does first

# A server started without `make run` (daphne grace.asgi:application) must not serve on
# a value it could not use either: the same problems as the system check grace.E010.
if getattr(settings, "GRACE_SETTINGS_PROBLEMS", []):
    raise ImproperlyConfigured(" ".join(settings.GRACE_SETTINGS_PROBLEMS))

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from grace.asgi_handler import GraceASGIHandler  # noqa: E402
from grace.daphne_tuning import content_type_parse_cached  # noqa: E402
from grace.http_guard import HttpGuard  # noqa: E402
from grace.request_threads import RequestThreads, request_started_on_first_use  # noqa: E402
from grace.routing import websocket_urlpatterns  # noqa: E402
from grace.ws_guard import WsOriginValidator  # noqa: E402

request_started_on_first_use()
content_type_parse_cached()  # under daphne: Twisted's per-POST header parse, memoised

application = ProtocolTypeRouter(
    {
        "http": HttpGuard(RequestThreads(GraceASGIHandler())),
        # The origin's host and port must be this server's or a trusted origin's.
        "websocket": WsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
