"""Notification channels (registered by receiver config key) and the dispatcher.

Importing the package registers every channel in :data:`CHANNELS`:
``email_configs``, ``slack_configs``, ``pagerduty_configs``, ``webhook_configs`` and
``alertmanager_configs``.
"""

from monitoring.sinks.notifiers import alertmanager, email, pagerduty, slack, webhook
from monitoring.sinks.notifiers.base import CHANNELS, Context, DeliveryError, Integration, build

__all__ = [
    "CHANNELS",
    "Context",
    "DeliveryError",
    "Integration",
    "alertmanager",
    "build",
    "email",
    "pagerduty",
    "slack",
    "webhook",
]
