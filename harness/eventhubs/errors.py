"""Event Hubs wire errors: typed exceptions carrying the AMQP condition (link refusals, management status)."""

from __future__ import annotations

from enginehub.harness.amqp.errors import Condition, LinkError


class EntityNotFound(LinkError):
    def __init__(self, description: str) -> None:
        super().__init__(Condition.NOT_FOUND, description)


class Unauthorized(LinkError):
    def __init__(self, description: str) -> None:
        super().__init__(Condition.UNAUTHORIZED_ACCESS, description)


class ReceiverStolen(LinkError):
    def __init__(self, description: str) -> None:
        super().__init__(Condition.LINK_STOLEN, description)


class QuotaExceeded(LinkError):
    def __init__(self, description: str) -> None:
        super().__init__(Condition.RESOURCE_LIMIT_EXCEEDED, description)


class InvalidFilter(LinkError):
    def __init__(self, description: str) -> None:
        super().__init__(Condition.NOT_ALLOWED, description)


class ManagementError(Exception):
    """A $management / $cbs request failed with an HTTP-like status code."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
