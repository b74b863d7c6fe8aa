"""Uploads continue from what the server holds (issue 12), against a blob store in
process that loses connections where the test says: the request, or only its answer.
The same against real daphne: tests/e2e/test_client_e2e.py."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from collab.client.errors import ServerRefusedError, UnreachableError
from collab.client.http import ApiError, Response
from collab.crypto.attachment import CT_CHUNK_SIZE, ciphertext_size
from tests.client.fake_server import FakeServer, Person

PART = 16 * CT_CHUNK_SIZE


class Blobs:
    """POST /api/cases/<id>/blobs, PUT parts, POST complete, GET .../upload (unless
    ``with_status`` is off: an older server answers it 404). ``faults`` maps a call
    number to "request" (lost before it arrived) or "answer" (done, answer lost)."""

    def __init__(self, *, with_status: bool = True) -> None:
        self.with_status = with_status
        self.data = bytearray()
        self.size = 0
        self.status = "uploading"
        self.calls: list[str] = []
        self.faults: dict[int, str] = {}

    def _fault(self, name: str) -> str | None:
        self.calls.append(name)
        return self.faults.get(len(self.calls))

    def put_bytes(self, path: str, data: bytes) -> Response:
        offset = int(path.rsplit("/", 1)[1])
        fault = self._fault(f"part {offset // PART}")
        if fault == "request":
            raise UnreachableError("connection reset")
        if offset < len(self.data):
            if bytes(self.data[offset:offset + len(data)]) != data:
                raise ApiError(409, "part_mismatch", "", {"error": "part_mismatch"})
        elif offset != len(self.data):
            raise ApiError(409, "out_of_order", "Send the next part.",
                           {"error": "out_of_order", "received_bytes": len(self.data)})
        else:
            self.data += data
        if fault == "answer":
            raise UnreachableError("connection reset")
        return Response(200, {"received_bytes": len(self.data)})

    def json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        if path.endswith("/upload"):
            self.calls.append("status")
            if not self.with_status:
                raise ApiError(404, "not_found", "", {"error": "not_found"})
            return Response(200, {"status": self.status, "size": self.size,
                                  "received_bytes": len(self.data)})
        assert path.endswith("/complete")
        fault = self._fault("complete")
        if fault == "request":
            raise UnreachableError("connection reset")
        if self.status == "complete":
            raise ApiError(409, "not_uploading", "", {"error": "not_uploading"})
        self.status = "complete"
        if fault == "answer":
            raise UnreachableError("connection reset")
        return Response(200, {"status": "complete"})


def uploader(blobs: Blobs) -> Any:
    client = FakeServer().client(Person("alice"))
    client.backoff_first = client.backoff_max = 0.001

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert path.endswith("/blobs") and body is not None
        blobs.size = body["size"]
        return {"blob_id": str(uuid.uuid4())}

    client.call = call  # type: ignore[method-assign]
    client.http = blobs  # type: ignore[assignment]
    return client


DATA = os.urandom(2 * 1024 * 1024 + 5000)  # three parts


def test_every_lost_request_and_answer_is_resumed_from_the_server_count() -> None:
    blobs = Blobs()
    # part 1's request lost, part 2's answer lost, complete's answer lost
    blobs.faults = {2: "request", 5: "answer", 7: "answer"}
    client = uploader(blobs)
    client.upload(uuid.uuid4(), DATA, "application/octet-stream")
    assert blobs.calls == ["part 0", "part 1", "status", "part 1", "part 2", "status",
                           "complete", "status"]
    assert len(blobs.data) == ciphertext_size(len(DATA)) and blobs.status == "complete"


def test_a_server_without_the_status_gets_the_part_again() -> None:
    blobs = Blobs(with_status=False)
    blobs.faults = {2: "answer"}  # part 1 arrived; its answer did not
    client = uploader(blobs)
    client.upload(uuid.uuid4(), DATA, "application/octet-stream")
    # Sent again unchanged: the server holds those bytes already and says so.
    assert blobs.calls == ["part 0", "part 1", "status", "part 1", "part 2", "complete"]
    assert len(blobs.data) == ciphertext_size(len(DATA))


def test_a_409_out_of_order_naming_the_end_of_the_part_means_it_arrived() -> None:
    blobs = Blobs(with_status=False)
    client = uploader(blobs)
    real_put = blobs.put_bytes
    seen: list[str] = []

    def put(path: str, data: bytes) -> Response:
        seen.append(path)
        if len(seen) == 2:  # stored, then the answer lost
            real_put(path, data)
            raise UnreachableError("connection reset")
        if len(seen) == 3:  # the server's view: that part is done, send the next one
            raise ApiError(409, "out_of_order", "", {"error": "out_of_order",
                                                     "received_bytes": 2 * PART})
        return real_put(path, data)

    blobs.put_bytes = put  # type: ignore[method-assign]
    client.upload(uuid.uuid4(), DATA, "application/octet-stream")
    assert [p.rsplit("/", 1)[1] for p in seen] == ["0", str(PART), str(PART), str(2 * PART)]


def test_a_server_that_lost_bytes_or_refuses_is_not_retried_blindly() -> None:
    blobs = Blobs()
    blobs.faults = {2: "request"}
    client = uploader(blobs)
    real_json = blobs.json

    def shrunk(method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        answer = real_json(method, path, body)
        if path.endswith("/upload"):
            answer.body["received_bytes"] = 0  # it holds less than it acknowledged
        return answer

    blobs.json = shrunk  # type: ignore[method-assign]
    with pytest.raises(ServerRefusedError) as lost:
        client.upload(uuid.uuid4(), DATA, "application/octet-stream")
    assert lost.value.code == "upload_lost"

    refusing = Blobs()
    client = uploader(refusing)

    def refuse(path: str, data: bytes) -> Response:
        refusing.calls.append(path)
        raise ApiError(410, "upload_expired", "", {"error": "upload_expired"})

    refusing.put_bytes = refuse  # type: ignore[method-assign]
    with pytest.raises(ServerRefusedError) as expired:
        client.upload(uuid.uuid4(), DATA, "application/octet-stream")
    assert expired.value.code == "upload_expired" and len(refusing.calls) == 1


def test_retries_are_bounded() -> None:
    blobs = Blobs()
    blobs.faults = {n: "request" for n in range(1, 100)}
    client = uploader(blobs)
    with pytest.raises(UnreachableError):
        client.upload(uuid.uuid4(), DATA, "application/octet-stream")
    assert blobs.calls.count("part 0") == 6
