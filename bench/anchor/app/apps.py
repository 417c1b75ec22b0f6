from django.apps import AppConfig


class AnchorConfig(AppConfig):
    name = "bench.anchor.app"
    label = "anchor"
