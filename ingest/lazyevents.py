"""Received events whose SDK wrapper is built on first use.

azure-eventhub 5.15.1 (pyamqp transport) turns every received AMQP message into an ``EventData`` with
``EventData._from_message``: ``EventData(body="")`` builds an ``AmqpAnnotatedMessage`` with a header and
properties and sets three properties through it, then a second ``AmqpAnnotatedMessage(message=...)``
replaces the first one, copying every section of the message. In the receiving process of a node, which
is the pipeline's bottleneck, that was ~17 % of its CPU (py-spy, a default throughput run: EventData
.__init__ and the DictMixin length checks of its property setters, ``_from_amqp_message``,
``AmqpMessageProperties.__init__``), and the consumer reads none of it: :func:`~enginehub.ingest.worker
.pack_events` takes the sections from ``EventData._message`` (the decoded pyamqp ``Message``).

:class:`ReceivedEvent` is an ``EventData`` whose ``_raw_amqp_message`` (everything the public properties
read: body, properties, system_properties, sequence_number, offset, ...) is built from the same message
the first time anything reads it, with the SDK's own constructor, so every public attribute has the value
the SDK's event would have; the consumer reads it for the last event of a batch (the checkpoint) and the
SDK for the last event it received (its reconnect offset).

:func:`install` wraps ``processor.create_consumer`` (as ``reconnect.install`` does) so each partition
consumer the processor creates hands out such events. It changes nothing, and says so, when the SDK's
internals are not what this was written against, when the transport is not pyamqp (uamqp builds its events
differently), or when network tracing is on (the SDK logs each event's properties as it builds it).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from azure.eventhub import EventData
from azure.eventhub.amqp import AmqpAnnotatedMessage

LOG = logging.getLogger(__name__)


class ReceivedEvent(EventData):
    """An ``EventData`` for a received pyamqp ``Message``; its ``AmqpAnnotatedMessage`` is built lazily."""

    def __init__(self, message: Any) -> None:  # noqa: D107 - not EventData's: a received message, not a body
        # what EventData._from_message leaves set, minus the AmqpAnnotatedMessage (see the module doc)
        self._last_enqueued_event_properties: dict[str, Any] = {}
        self._sys_properties = None
        self._uamqp_message = None
        self._message = message
        self._lazy_raw: AmqpAnnotatedMessage | None = None

    @property  # type: ignore[override]
    def _raw_amqp_message(self) -> AmqpAnnotatedMessage:
        raw = self._lazy_raw
        if raw is None:
            raw = self._lazy_raw = AmqpAnnotatedMessage(message=self._message)
        return raw

    @_raw_amqp_message.setter
    def _raw_amqp_message(self, value: AmqpAnnotatedMessage) -> None:
        self._lazy_raw = value


def _next_message_in_buffer(consumer: Any) -> ReceivedEvent:
    """``EventHubConsumer._next_message_in_buffer`` (aio, pyamqp) without the eager wrapper."""
    event = ReceivedEvent(consumer._message_buffer.popleft())
    consumer._last_received_event = event
    return event


def _applies(consumer: Any) -> bool:
    transport = getattr(consumer, "_amqp_transport", None)
    client = getattr(consumer, "_client", None)
    config = getattr(client, "_config", None)
    return (
        getattr(transport, "KIND", None) == "pyamqp"
        and hasattr(consumer, "_message_buffer")
        and callable(getattr(consumer, "_next_message_in_buffer", None))
        and config is not None
        and not getattr(config, "network_tracing", False)
    )


def install(processor: Any) -> bool:
    """Make each consumer ``processor`` creates from now on hand out :class:`ReceivedEvent` s. False
    (nothing changed) when the processor is not what this was written against."""
    create = getattr(processor, "create_consumer", None)
    if create is None:
        return False
    told = False

    def create_consumer(*args: Any, **kwargs: Any) -> Any:
        nonlocal told
        consumer = create(*args, **kwargs)
        applies = _applies(consumer)
        if applies:
            consumer._next_message_in_buffer = functools.partial(_next_message_in_buffer, consumer)
        if not told:
            told = True
            LOG.info(
                "received events: the SDK's wrapper built on first use"
                if applies
                else "received events built by the SDK as usual (not pyamqp, or network tracing is on)"
            )
        return consumer

    processor.create_consumer = create_consumer
    return True
