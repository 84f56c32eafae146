"""Ticket search (检索), the pure part: which terms a ticket is found by, which terms a query needs, and
whether a ticket really matches a query. No I/O; the index itself is `search_store`.

Terms are prefixed strings:
- `x:<token>`: free text of the title and description. Chinese, Japanese and Korean text has no spaces,
  so a CJK run is cut into overlapping bigrams (空调漏水 → 空调, 调漏, 漏水) and a query's CJK run is
  looked up by the bigrams that cover it (空调, 漏水); other text is cut into lower-case letter/digit
  runs. NFKC folds full-width forms.
- `c:<customer id>`: the customer (a phone or e-mail is turned into the customer's keyed id, never
  stored), `n:<bigram or word>`: the customer's name when the ticket was indexed, `s:<serial>`: the
  product's serial, `r:<region>`: each level of the region path, `o:open` / `o:done`: whether the
  ticket is still being worked on (new to escalated, reopened) or done (resolved, closed, cancelled):
  history is mostly done, so a search among open tickets skips it; `y:<priority>`, `k:<category>`,
  `h:<channel>`: those fields; `a:`: every ticket (a search by filters only walks it).
Text and name terms are stored keyed (HMAC-SHA256 with the customer-id key, `seal`): the index holds no
readable word of what a customer wrote or is called, and what erasure takes out leaves nothing behind.
An index hit is only a candidate: `matches` checks the ticket as it is now (the text as a substring,
the filters on the current status, grid, technician...), so a stale or colliding term never shows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DONE_STATUSES = frozenset({"resolved", "closed", "cancelled"})
MAX_TEXT_TERMS = 96  # text terms kept per ticket (title first); a longer description's tail is not indexed
MAX_TOKEN_CHARS = 32
EVERY = "a:"
# Fields that are terms too (`y:P1`, `k:installation`, `h:web`): they change seldom (a supervisor's
# correction re-indexes the ticket), so a filter on one walks its postings instead of checking tickets.
FACETS = {"priority": "y:", "category": "k:", "channel": "h:"}

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_CJK_RUN = re.compile(rf"[{_CJK}]+")


def normalized(text: str) -> str:
    """NFKC and case-folded: full-width letters and digits become ASCII, case is ignored."""
    return unicodedata.normalize("NFKC", text).casefold()


def tokens(text: str) -> list[str]:
    """Return the text's tokens in order (CJK bigrams, other words), duplicates kept."""
    out: list[str] = []
    for run in _RUNS.findall(normalized(text)):
        if _CJK_RUN.fullmatch(run):
            out.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        else:
            out.append(run[:MAX_TOKEN_CHARS])
    return out


def covering_tokens(text: str) -> list[str]:
    """Return fewer tokens than `tokens` that every text containing this one still has: of a Chinese
    run's bigrams every other one and the last (`空调漏水` → 空调, 漏水), other words whole."""
    out: list[str] = []
    for run in _RUNS.findall(normalized(text)):
        if not _CJK_RUN.fullmatch(run):
            out.append(run[:MAX_TOKEN_CHARS])
        elif len(run) <= 2:
            out.append(run)
        else:
            out.extend(run[i : i + 2] for i in sorted({*range(0, len(run) - 1, 2), len(run) - 2}))
    return out


def _distinct(items: Iterable[str], limit: int | None = None) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if limit is not None and len(seen) >= limit:
            break
        seen.setdefault(item, None)
    return list(seen)


def normalized_serial(serial: str) -> str:
    """A serial as typed on a label: case, spaces and dashes do not count."""
    return re.sub(r"[\s\-_/]", "", normalized(serial))


def region_levels(region_code: str) -> list[str]:
    """`310000/310100/310104` → every level, so a search by city finds its districts' tickets."""
    return [part for part in region_code.split("/") if part]


def ticket_terms(ticket: Mapping[str, Any], customer_name: str | None) -> list[str]:
    """Return the terms a stored ticket is found by."""
    text = f"{ticket.get('title') or ''}\n{ticket.get('description') or ''}"
    terms = [EVERY, *(f"x:{t}" for t in _distinct(tokens(text), MAX_TEXT_TERMS))]
    if ticket.get("customer_id"):
        terms.append(f"c:{ticket['customer_id']}")
    if customer_name:
        terms.extend(f"n:{t}" for t in _distinct(tokens(customer_name)))
    serial = (ticket.get("product") or {}).get("serial")
    if isinstance(serial, str) and normalized_serial(serial):
        terms.append(f"s:{normalized_serial(serial)}")
    terms.extend(f"r:{level}" for level in region_levels(str(ticket.get("region_code") or "")))
    if ticket.get("status"):
        terms.append(state_term({str(ticket["status"])}) or "")
    terms.extend(f"{prefix}{ticket[field]}" for field, prefix in FACETS.items() if ticket.get(field))
    return _distinct(t for t in terms if t)


def state_term(statuses: Iterable[str]) -> str | None:
    """`o:done` when every status is a done one, `o:open` when none is, else None (both kinds)."""
    done = {s in DONE_STATUSES for s in statuses}
    return None if len(done) != 1 else "o:done" if done.pop() else "o:open"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What a search asks. Text, customer, name, serial and region are looked up in the index; the
    other filters are checked on each candidate ticket."""

    text: str | None = None
    customer_ids: frozenset[str] = frozenset()  # the customer named by id, phone or e-mail
    name: str | None = None
    serial: str | None = None
    region_code: str | None = None
    status: frozenset[str] = frozenset()
    priority: frozenset[str] = frozenset()
    category: frozenset[str] = frozenset()
    channel: str | None = None
    grid_id: str | None = None
    technician_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def terms(self, *, facets: bool = True) -> list[str]:
        """The index terms every match has (at least `a:`). Several customer ids (a phone and an e-mail
        naming different records) are checked on the candidates, not intersected. A Chinese run is
        looked up by bigrams that cover it (every other one, and the last): the candidates are checked
        for the whole run anyway. A single priority, category or channel is a term when the index has
        them (`facets`: an index begun before they were indexed checks them on the candidates only)."""
        out: list[str] = []
        if self.text:
            out.extend(f"x:{t}" for t in _distinct(covering_tokens(self.text)))
        if len(self.customer_ids) == 1:
            out.append(f"c:{next(iter(self.customer_ids))}")
        if self.name:
            out.extend(f"n:{t}" for t in _distinct(tokens(self.name)))
        if self.serial:
            out.append(f"s:{normalized_serial(self.serial)}")
        if self.region_code:
            out.append(f"r:{region_levels(self.region_code)[-1]}")
        if self.status and (state := state_term(self.status)):
            out.append(state)
        if facets:
            for wanted, prefix in (
                (self.priority, FACETS["priority"]),
                (self.category, FACETS["category"]),
                (frozenset({self.channel} if self.channel else ()), FACETS["channel"]),
            ):
                if len(wanted) == 1:
                    out.append(f"{prefix}{next(iter(wanted))}")
        return _distinct(out) or [EVERY]


SEALED_PREFIXES = ("x:", "n:")


def seal(terms: Iterable[str], key: bytes) -> list[str]:
    """Return the terms as stored: text and name terms keyed, the others as they are."""
    out = []
    for term in terms:
        prefix = term[:2]
        if prefix in SEALED_PREFIXES:
            term = prefix + hmac.new(key, term.encode(), hashlib.sha256).hexdigest()[:24]
        out.append(term)
    return out


def matches(query: SearchQuery, ticket: Mapping[str, Any], customer_name: str | None = None) -> bool:
    """True when the ticket, as stored now (and its customer's name now), answers the query."""
    if query.text and not _has_text(query.text, ticket):
        return False
    if query.name and not set(tokens(query.name)) <= set(tokens(customer_name or "")):
        return False
    if query.customer_ids and ticket.get("customer_id") not in query.customer_ids:
        return False
    if query.serial:
        serial = (ticket.get("product") or {}).get("serial")
        if not isinstance(serial, str) or normalized_serial(serial) != normalized_serial(query.serial):
            return False
    if query.region_code and region_levels(query.region_code)[-1] not in region_levels(
        str(ticket.get("region_code") or "")
    ):
        return False
    return _filters_hold(query, ticket)


def _has_text(text: str, ticket: Mapping[str, Any]) -> bool:
    haystack = normalized(f"{ticket.get('title') or ''}\n{ticket.get('description') or ''}")
    words = set(tokens(haystack))
    for run in _RUNS.findall(normalized(text)):
        found = run in haystack if _CJK_RUN.fullmatch(run) else run[:MAX_TOKEN_CHARS] in words
        if not found:
            return False
    return True


def _filters_hold(query: SearchQuery, ticket: Mapping[str, Any]) -> bool:
    checks = (
        (query.status, ticket.get("status")),
        (query.priority, ticket.get("priority")),
        (query.category, ticket.get("category")),
    )
    if any(wanted and value not in wanted for wanted, value in checks):
        return False
    for wanted_one, value in (
        (query.channel, ticket.get("channel")),
        (query.grid_id, ticket.get("grid_id")),
        (query.technician_id, ticket.get("technician_id")),
    ):
        if wanted_one is not None and value != wanted_one:
            return False
    created = ticket.get("created_at")
    if query.created_from is not None and (created is None or _aware(created) < query.created_from):
        return False
    return not (query.created_to is not None and (created is None or _aware(created) >= query.created_to))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def entry(ordinal: int, ticket_id: str) -> str:
    """A posting: the ticket's index ordinal (zero-padded, so entries sort newest last) and its id."""
    return f"{ordinal:012d}|{ticket_id}"


def entry_ticket(posting: str) -> str:
    return posting.split("|", 1)[1]


def entry_ordinal(posting: str) -> int:
    return int(posting.split("|", 1)[0])
