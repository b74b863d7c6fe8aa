from django.urls import path

from collab.consumers.case_room import CaseRoomConsumer
from collab.consumers.ping import PingConsumer

websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    path("ws/cases/<uuid:case_id>/", CaseRoomConsumer.as_asgi()),
]
