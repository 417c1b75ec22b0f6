from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

import grace.views  # noqa: F401 - registers /api/health on the api
from chat.api import router as chat_router
from chat.pages import chat_page
from grace.api import api

api.add_router("/chat/", chat_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls),
    path("", chat_page, name="chat-page"),
]
