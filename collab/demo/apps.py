from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "collab.demo"
    label = "demo"
