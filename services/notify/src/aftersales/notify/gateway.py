"""The inbound mail gateway: an SMTP server (aiosmtpd) that takes mail for the platform's domains and
hands each to the `Inbox`. It says 250 only once the mail is recorded with its command; a database that
does not answer gets 451 (the sending server retries), so a mail is never accepted and then lost.

Replies: 550 for a recipient outside `INBOUND_MAIL_DOMAINS` or a mail that cannot be a customer's, 552
above `INBOUND_MAIL_MAX_BYTES` (aiosmtpd's `data_size_limit`, also announced as SIZE), 451 when busy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from aftersales.notify.inbound import UnreadableMail
from aftersales.notify.metrics import INBOUND_MAILS
from aftersales.notify.service import Inbox

log = logging.getLogger("aftersales.notify.gateway")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str
    port: int
    domains: tuple[str, ...]
    max_bytes: int
    timeout_s: float  # for recording one mail; past it the sender is told to retry (451)
    hostname: str = "aftersales"


class InboundGateway:
    """aiosmtpd's handler: the recipients are checked at RCPT, the mail is recorded at DATA."""

    def __init__(self, inbox: Inbox, config: GatewayConfig) -> None:
        self.inbox = inbox
        self.config = config

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.rpartition("@")[2].lower() not in self.config.domains:
            INBOUND_MAILS.labels("refused").inc()
            return "550 5.1.1 recipient unknown: this server takes mail for the after-sales service only"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw).encode()
        try:
            outcome = await asyncio.wait_for(self.inbox.receive(raw), timeout=self.config.timeout_s)
        except UnreadableMail as exc:
            INBOUND_MAILS.labels("refused").inc()
            return f"550 5.6.0 {exc}"
        except Exception as exc:  # the database is down or slow: the sending server keeps the mail
            INBOUND_MAILS.labels("busy").inc()
            log.warning(
                "inbound mail not recorded; sender told to retry", extra={"error": type(exc).__name__}
            )
            return "451 4.3.0 temporarily unable to take the mail, try again later"
        return f"250 OK {outcome}"

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen until `stop` is set (a runtime background task)."""
        config = self.config
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                self,
                data_size_limit=config.max_bytes,
                enable_SMTPUTF8=True,
                hostname=config.hostname,
                ident="aftersales inbound mail",
            ),
            host=config.host,
            port=config.port,
        )
        log.info("inbound mail gateway listening", extra={"port": config.port})
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
