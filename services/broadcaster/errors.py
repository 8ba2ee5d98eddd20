"""The broadcaster's exceptions, one per rule broken::

    BroadcasterError
    ├── TemplateError             the region pack's templates cannot render a message
    ├── CapInvalid                a built CAP document fails the OASIS CAP 1.2 schema
    ├── DrillRefused              an exercise message was offered to a live channel
    ├── WebhookConfigError        SONAE_WEBHOOKS_FILE is missing, unreadable or invalid
    └── BroadcasterTablesMissing  the database lacks the broadcaster's tables (migrate first)

Channel send failures are not exceptions of this tree: a channel reports them
as a :class:`~services.broadcaster.channels.DeliveryResult` so the dispatcher
can decide between retrying and giving up.
"""

from __future__ import annotations

__all__ = [
    "BroadcasterError",
    "BroadcasterTablesMissing",
    "CapInvalid",
    "DrillRefused",
    "TemplateError",
    "WebhookConfigError",
]


class BroadcasterError(Exception):
    """Base of every broadcaster error."""


class TemplateError(BroadcasterError):
    """A message cannot be rendered from the region pack's templates."""


class CapInvalid(BroadcasterError):
    """A CAP document does not validate against CAP-v1.2.xsd; it is never published."""


class DrillRefused(BroadcasterError):
    """An exercise (drill) message was offered to a channel marked live."""


class WebhookConfigError(BroadcasterError):
    """The webhook subscriber file is missing, unreadable or invalid."""


class BroadcasterTablesMissing(BroadcasterError):
    """The broadcaster's tables are missing: run the migrations (``sonae db migrate``)."""
