"""For notify's in-process tests: an e-mail channel that records what it is asked to send."""

from __future__ import annotations

from aftersales.notify.channels import Outgoing, Transient
from aftersales.notify.domain import ChannelName, Recipient


class RecordingChannel:
    """An e-mail channel that records each message with its address, failing the first `fail` sends
    as a server would that answers 451."""

    name = ChannelName.EMAIL

    def __init__(self) -> None:
        self.sent: list[tuple[str, Outgoing]] = []
        self.fail = 0

    async def send(self, recipient: Recipient, message: Outgoing) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise Transient("smtp_451")
        assert recipient.email is not None
        self.sent.append((recipient.email, message))
