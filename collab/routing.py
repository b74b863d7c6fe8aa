from django.urls import path, re_path

from collab.consumers.case_room import CaseRoomConsumer
from collab.consumers.ping import PingConsumer

websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    # Any id segment: the consumer answers a malformed one with close 4400, not HTTP 500.
    re_path(r"^ws/cases/(?P<case_id>[^/]+)/$", CaseRoomConsumer.as_asgi()),
]
