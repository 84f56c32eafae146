"""Channel adapters behind one interface: e-mail over SMTP, SMS through a provider (Aliyun), and the
DingTalk, WeCom and Feishu group robots. An adapter sends one rendered message to one recipient, or raises
`Transient` (worth a retry later) or `Refused` (will never go through as it is)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aftersales.notify.domain import ChannelName, Recipient
from aftersales.notify.templates import RenderedMessage


class ChannelError(Exception):
    """A send that did not go through; `kind` names the error without any personal data (an exception
    class, an SMTP code, a provider's error code), for the delivery record and the status event."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind[:100]


class Transient(ChannelError):
    """The channel could not take the message now (unreachable, busy, throttled): retry later."""


class Refused(ChannelError):
    """The channel refused the message for good (bad address, rejected content or credentials)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as a channel sends it."""

    delivery_id: str
    template: str
    params: Mapping[str, str]
    rendered: RenderedMessage
    ticket_id: str | None = None  # the ticket it is about: e-mail threads replies by it


class ChannelAdapter(Protocol):
    name: ChannelName

    async def send(self, recipient: Recipient, message: Outgoing) -> None:
        """Hand the message to the channel; raise Transient or Refused when it did not go through."""
        ...


def http_status_error(status: int, provider: str) -> ChannelError:
    """Return the error an HTTP status of a provider means: 429 and 5xx are transient, others refused."""
    kind = f"{provider}_http_{status}"
    return Transient(kind) if status == 429 or status >= 500 else Refused(kind)
