"""Topic names: one topic per producing stream, versioned in the name; a breaking change makes a `.v2`."""

from enum import StrEnum


class Topic(StrEnum):
    REQUESTS = "aftersales.requests.v1"
    TICKETS = "aftersales.tickets.v1"
    ASSIGNMENTS = "aftersales.assignments.v1"
    FOLLOWUPS = "aftersales.followups.v1"
    FEEDBACK = "aftersales.feedback.v1"
    REPORTS = "aftersales.reports.v1"
    NOTIFICATIONS = "aftersales.notifications.v1"
    FIELDWORK = "aftersales.fieldwork.v1"
    PRIVACY = "aftersales.privacy.v1"

    @property
    def dlq(self) -> str:
        """Return the dead-letter topic of this topic."""
        return dead_letter_topic(self.value)


def dead_letter_topic(topic: str) -> str:
    """Return the dead-letter topic for a (physical) topic name."""
    return f"{topic}.dlq"
