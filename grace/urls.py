from __future__ import annotations

from django.contrib import admin
from django.contrib.staticfiles.views import serve as static_serve
from django.urls import include, path, re_path
from django.views.generic import RedirectView

import grace.metrics.exposition  # noqa: F401 - registers /api/metrics on the api
import grace.views  # noqa: F401 - registers /api/health on the api
from chat.api import on_chat_refused
from chat.api import router as chat_router
from chat.exceptions import ChatRefused
from chat.pages import chat_page
from chat.stream import router as chat_stream_router
from executor.api import on_queue_full
from executor.api import router as tasks_router
from executor.exceptions import QueueFull
from grace.api import api

api.add_router("/chat/", chat_router)
api.add_router("/chat/", chat_stream_router)
api.add_router("/tasks/", tasks_router)
api.add_exception_handler(QueueFull, on_queue_full)  # 503 with Retry-After
api.add_exception_handler(ChatRefused, on_chat_refused)  # 503 with Retry-After

urlpatterns = [
    path("admin/ops/", include("grace.admin_views")),  # request story, dashboard, live events
    # API tokens moved from the chat app to the core: old admin links still lead to them.
    re_path(r"^admin/chat/apitoken/(?P<rest>.*)$",
            RedirectView.as_view(url="/admin/grace/apitoken/%(rest)s", query_string=True,
                                 permanent=True)),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls),
    path("", chat_page, name="chat-page"),
    # The page's script and stylesheet, served by Django itself (daphne serves no files);
    # behind a proxy, `collectstatic` and let the proxy serve STATIC_ROOT instead.
    re_path(r"^static/(?P<path>.+)$", static_serve, {"insecure": True}),
    # Browsers ask for /favicon.ico on every page that names none (the admin's, the API docs).
    path("favicon.ico", RedirectView.as_view(url="/static/chat/favicon.svg", permanent=True)),
]
