"""E-mail over SMTP (stdlib `smtplib`, run in a thread so the event loop never blocks on the server)."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from aftersales.notify.channels import Outgoing, Refused, Transient
from aftersales.notify.domain import ChannelName, Recipient
from aftersales.notify.inbound import thread_message_id


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = 10.0


def compose(server: SmtpServer, to: str, message: Outgoing) -> EmailMessage:
    """Return the mail: subject and UTF-8 text body. The Message-ID is derived from the delivery id, so a
    re-sent copy (after a crash between sending and recording) can be recognised by the receiver, and
    names the ticket, as does a `[#<ticket id>]` tag in the subject: the customer's reply finds its
    ticket (see `inbound.thread_of`)."""
    mail = EmailMessage()
    mail["From"] = server.sender
    mail["To"] = to
    subject = message.rendered.subject
    mail["Subject"] = f"{subject} [#{message.ticket_id}]" if message.ticket_id else subject
    mail["Date"] = formatdate(localtime=False)
    domain = server.sender.rsplit("@", 1)[-1] or "aftersales.local"
    if message.ticket_id:
        mail["Message-ID"] = thread_message_id(message.ticket_id, message.delivery_id, domain)
    else:
        mail["Message-ID"] = f"<d.{_token(message.delivery_id)}@{domain}>"
    mail["X-Aftersales-Template"] = message.template
    mail.set_content(message.rendered.body, charset="utf-8")
    return mail


def _token(delivery_id: str) -> str:
    return hashlib.sha256(delivery_id.encode()).hexdigest()[:24]


class EmailChannel:
    name = ChannelName.EMAIL

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def send(self, recipient: Recipient, message: Outgoing) -> None:
        if recipient.email is None:
            raise Refused("no_email_address")
        mail = compose(self.server, recipient.email, message)
        await asyncio.to_thread(self._send, mail)

    def _send(self, mail: EmailMessage) -> None:
        server = self.server
        try:
            with smtplib.SMTP(server.host, server.port, timeout=server.timeout_s) as smtp:
                if server.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if server.username and server.password:
                    smtp.login(server.username, server.password)
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code(min(codes) if codes else 550) from None
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise Transient(f"smtp_{type(exc).__name__}") from None


def _by_code(code: int) -> Transient | Refused:
    """4xx is a temporary refusal (greylisting, a full mailbox, a busy server); 5xx is for good."""
    return Transient(f"smtp_{code}") if 400 <= code < 500 else Refused(f"smtp_{code}")
