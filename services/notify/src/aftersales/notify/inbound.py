"""Inbound mail as the platform reads it (pure, stdlib `email` with `policy.default`): who wrote, what
about, the text without the quoted earlier mails, the attachments, and which ticket's thread a reply
belongs to (notify's own Message-IDs name the ticket, see `thread_message_id`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser

from aftersales.notify.domain import Language

MAX_TITLE_CHARS = 200
MAX_TEXT_CHARS = 10_000
NO_SUBJECT = "E-mail without a subject"

# notify's outgoing Message-IDs: <t.<ticket id>.<delivery token>@<mail domain>>
_THREAD_ID = re.compile(r"<t\.([A-Za-z0-9_-]{1,100})\.[0-9a-f]{8,64}@([^<>\s]+)>")
_SUBJECT_TAG = re.compile(r"\[#([A-Za-z0-9_-]{1,100})\]")
# Where a mail client starts quoting the mail answered: "On <date>, <who> wrote:", Outlook's header
# block, the Chinese clients' "在 ... 写道：" and "-----原始邮件-----".
_QUOTE_START = re.compile(
    r"^\s*(on\s.{0,300}\swrote:|-{2,}\s*original message\s*-{2,}|在.{0,300}写道[:：]|-{2,}\s*原始邮件\s*-{2,}"
    r"|(from|发件人)[:：]\s.*@.+)\s*$",
    re.IGNORECASE,
)


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


class UnreadableMail(ValueError):
    """A mail the platform cannot take as a customer's (no sender address, not a mail at all)."""


@dataclass(frozen=True, slots=True)
class Attachment:
    name: str
    content_type: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True, slots=True)
class InboundMail:
    """One received mail, read: `mail_id` is a hash of its Message-ID (of its bytes when it has none)."""

    mail_id: str
    sender_email: str
    sender_name: str | None
    title: str
    text: str
    attachments: tuple[Attachment, ...]
    thread_ticket_id: str | None  # the ticket whose thread it answers, if any
    automatic: bool  # an auto-reply or bulk mail: never a customer's request


def thread_message_id(ticket_id: str, delivery_id: str, domain: str) -> str:
    """Return the Message-ID of a mail notify sends about a ticket: it names the ticket, so a reply's
    In-Reply-To/References lead back to it, and it is the same for every copy of one delivery."""
    token = hashlib.sha256(delivery_id.encode()).hexdigest()[:24]
    return f"<t.{ticket_id}.{token}@{domain}>"


def mail_id_of(message_id: str) -> str:
    """Return the id the platform files a mail under: a hash of its Message-ID (no address in it)."""
    return hashlib.sha256(message_id.strip().encode()).hexdigest()[:32]


def read_mail(raw: bytes, *, own_domains: Iterable[str]) -> InboundMail:
    """Return the mail in `raw` as the platform reads it; UnreadableMail when it names no sender."""
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(mail, EmailMessage)  # policy.default parses into EmailMessage
    sender = _sender(mail)
    message_id = str(mail.get("Message-ID", "")).strip()
    mail_id = mail_id_of(message_id) if message_id else hashlib.sha256(raw).hexdigest()[:32]
    subject = " ".join(str(mail.get("Subject", "")).split())
    return InboundMail(
        mail_id=mail_id,
        sender_email=sender.addr_spec,
        sender_name=sender.display_name.strip()[:200] or None,
        title=title_of(subject),
        text=without_quotes(_body_text(mail))[:MAX_TEXT_CHARS],
        attachments=tuple(_attachments(mail)),
        thread_ticket_id=thread_of(
            [str(mail.get("In-Reply-To", "")), str(mail.get("References", ""))], subject, own_domains
        ),
        automatic=_automatic(mail),
    )


def _sender(mail: EmailMessage) -> Address:
    try:
        header = mail["From"]
    except Exception:  # a header so broken the parser refuses it
        header = None
    addresses: Sequence[Address] = getattr(header, "addresses", ()) if header is not None else ()
    if not addresses or "@" not in addresses[0].addr_spec:
        raise UnreadableMail("no sender address (From)")
    return addresses[0]


def title_of(subject: str) -> str:
    """Return the ticket title of a subject: trimmed, at most 200 characters, a default when empty."""
    subject = subject.strip()
    return subject[:MAX_TITLE_CHARS] if subject else NO_SUBJECT


def thread_of(references: Sequence[str], subject: str, own_domains: Iterable[str]) -> str | None:
    """Return the ticket a mail answers: one named by notify's Message-ID in In-Reply-To/References
    (under one of the platform's mail domains), else a `[#<ticket id>]` tag in the subject."""
    domains = {d.lower() for d in own_domains}
    for header in references:
        for ticket_id, domain in _THREAD_ID.findall(header):
            if domain.lower() in domains:
                return str(ticket_id)
    tag = _SUBJECT_TAG.search(subject)
    return tag.group(1) if tag else None


def without_quotes(text: str) -> str:
    """Return what the sender wrote: quoted lines (`>`) and everything from a client's "On ... wrote:"
    (or Outlook's header block) on are the earlier mails, not this one."""
    kept: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if _QUOTE_START.match(line):
            break
        if not line.lstrip().startswith(">"):
            kept.append(line.rstrip())
    return "\n".join(kept).strip()


def _body_text(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    text = str(content)
    return html_to_text(text) if part.get_content_type() == "text/html" else text


def _attachments(mail: EmailMessage) -> Iterable[Attachment]:
    for index, part in enumerate(mail.iter_attachments()):
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue  # an attached message/rfc822: its text is not this customer's
        name = part.get_filename() or f"attachment-{index + 1}"
        yield Attachment(name=name[:200], content_type=part.get_content_type(), content=payload)


def _automatic(mail: EmailMessage) -> bool:
    """An auto-reply (out of office, a bounce) or bulk mail: answering it would start a mail loop."""
    auto = str(mail.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(mail.get("Precedence", "")).strip().lower()
    return auto != "no" or precedence in {"bulk", "junk", "list", "auto_reply"} or "X-Autoreply" in mail


class _Text(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote", "table"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.quoting = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        if tag == "blockquote":  # the quoted earlier mail
            self.quoting += 1
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self.skipping:
            self.skipping -= 1
        if tag == "blockquote" and self.quoting:
            self.quoting -= 1
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping and not self.quoting:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Return the readable text of an HTML body (no scripts, styles or quoted blocks)."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def language_of(mail: InboundMail) -> Language:
    """Return the language to answer a mail in: Chinese when its subject or text has Chinese in it."""
    return Language.ZH if _CJK.search(mail.title) or _CJK.search(mail.text) else Language.EN
