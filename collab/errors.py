"""Service errors with stable codes; views and consumers turn them into answers."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.message, **self.extra}


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Gone(ServiceError):
    status = 410


class TooLarge(ServiceError):
    status = 413


class RangeNotSatisfiable(ServiceError):
    status = 416


class Unauthorized(ServiceError):
    status = 401
