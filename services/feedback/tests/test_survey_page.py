"""The survey page without a browser (in-process service, in-memory MongoDB): each state of a link as a page
with its status, zh/en choice, escaping, the nonce-based CSP; and the language picker's rules."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from aftersales.feedback import page
from aftersales.feedback.app import Settings, build
from aftersales.feedback.domain import LinkState
from aftersales.feedback.page import Language, pick_language
from aftersales.feedback.service import Surveys
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SENT = "aftersales.feedback.survey-sent.v1"
ZH, EN = page.TEXTS[Language.ZH], page.TEXTS[Language.EN]


@pytest.fixture
async def feedback() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, http_port=18004)) as svc:
        yield svc


async def sent_link(svc: ServiceUnderTest, ticket_id: str) -> str:
    """Create the ticket's survey from events; return the link its survey-sent event carries."""
    await svc.deliver(ticket_created(ticket_id))
    await svc.deliver(work_order_resolved(ticket_id))
    [sent] = await svc.published.wait_for(SENT, lambda e: e.data["ticket_id"] == ticket_id)
    link: str = sent.data["link"]
    return link


def state_of(r: httpx.Response) -> str:
    found = re.search(r'<main data-state="(\w+)">', r.text)
    assert found is not None, r.text
    return found.group(1)


def assert_safe_page(r: httpx.Response) -> None:
    """HTML whose every style and script carries the nonce the CSP allows, and nothing else runs."""
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    [nonce] = set(re.findall(r"'nonce-([\w-]+)'", csp))
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    tags = re.findall(r"<(script|style)\b([^>]*)>", r.text)
    assert tags and all(f'nonce="{nonce}"' in attrs for _, attrs in tags)
    assert re.search(r"<(img|link|iframe)\b|src=|\son\w+=", r.text) is None  # no assets, no handlers
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"


async def test_the_link_in_the_event_opens_the_form_and_then_shows_it_was_answered(
    feedback: ServiceUnderTest,
) -> None:
    link = await sent_link(feedback, "T1")
    assert link.startswith("http://127.0.0.1:18004/v1/surveys/")  # this service's own address by default
    path = httpx.URL(link).path

    r = await feedback.http.get(path)
    assert r.status_code == 200 and state_of(r) == "open"
    assert_safe_page(r)
    assert ZH["csat"] in r.text and 'lang="zh-CN"' in r.text  # no language asked for: Chinese
    assert r.text.count('name="csat"') == 5 and r.text.count('name="nps"') == 11
    reload = await feedback.http.get(path)
    assert reload.headers["content-security-policy"] != r.headers["content-security-policy"]  # fresh nonce

    answer = await feedback.http.post(path, json={"csat": 5, "nps": 10})
    assert answer.status_code == 200, answer.text  # the JSON API is unchanged
    again = await feedback.http.get(path, params={"lang": "en"})
    assert again.status_code == 409 and state_of(again) == "answered"
    assert EN["answered_heading"] in again.text and "<form" not in again.text
    assert_safe_page(again)


async def test_expired_forged_and_unknown_links_are_pages_too(feedback: ServiceUnderTest) -> None:
    await sent_link(feedback, "T2")
    surveys: Surveys = feedback.app.state.surveys
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    expired = surveys.token_for({"_id": "SV-T2-r1", "expires_at": past})
    gone = surveys.token_for({"_id": "SV-nobody", "expires_at": past + timedelta(days=1)})
    real = surveys.token_for({"_id": "SV-T2-r1", "expires_at": past + timedelta(days=1)})
    forged = real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB")
    cases = [(expired, 410, "expired"), (forged, 403, "invalid"), ("garbage", 403, "invalid")]
    cases.append((gone, 403, "invalid"))  # genuine signature, no such survey
    for token, status, state in cases:
        r = await feedback.http.get(f"/v1/surveys/{token}", headers={"Accept-Language": "en-GB,en;q=0.9"})
        assert (r.status_code, state_of(r)) == (status, state), token
        assert EN[f"{state}_heading"] in r.text and "<form" not in r.text
        assert_safe_page(r)
    unknown = await feedback.http.get("/v1/surveys/garbage", params={"language": "en"})
    assert unknown.status_code == 422  # an unknown query parameter is refused, naming it
    # Nothing was answered by looking.
    r = await feedback.http.get("/v1/surveys/results", headers=feedback.auth("dev-supervisor-token"))
    assert r.json()["summary"]["submitted"] == 0


async def test_everything_shown_is_escaped(feedback: ServiceUnderTest) -> None:
    hostile = 'T-"><script>alert(1)</script>'
    link = await sent_link(feedback, hostile)
    r = await feedback.http.get(httpx.URL(link).path, params={"lang": "<script>en"})
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert r.text.count("<script") == 1  # only the page's own
    assert ZH["submit"] in r.text  # an unknown ?lang= falls back (Accept-Language, then zh)


@pytest.mark.parametrize(
    ("lang", "accept", "expected"),
    [
        (None, None, Language.ZH),
        ("en", None, Language.EN),
        ("EN-us", "zh-CN", Language.EN),
        ("zh", "en", Language.ZH),
        ("fr", "en-US,en;q=0.9", Language.EN),
        (None, "fr-FR, en;q=0.5, zh;q=0.8", Language.ZH),
        (None, "en;q=0, zh-TW;q=0.1", Language.ZH),
        (None, "de, ja;q=0.8", Language.ZH),
        (None, "en;q=abc", Language.ZH),
        (None, "zh_CN", Language.ZH),
        (None, ",;,", Language.ZH),
    ],
)
def test_language_is_the_query_then_accept_language_then_chinese(
    lang: str | None, accept: str | None, expected: Language
) -> None:
    assert pick_language(lang, accept) is expected


def test_every_state_renders_in_both_languages_with_its_status() -> None:
    for language in Language:
        for state in LinkState:
            shown = page.render(state, language, ticket_id="T-1")
            assert shown.status == {"open": 200, "answered": 409, "expired": 410, "invalid": 403}[state]
            assert page.TEXTS[language][f"{state.value}_heading"] in shown.html
            assert shown.headers["Content-Security-Policy"].count("'nonce-") == 2
