"""The survey as a customer meets it: feedback as a real process on real Kafka + FerretDB, its link opened
in a real headless Chromium (Debian's, driven by Playwright for Python), answered by clicking, and then the
link's other states (answered, expired, invalid) in Chinese and English.

Playwright rather than Selenium: its async API runs on the suite's event loop beside the service clients,
its locators wait for a condition with a deadline (no sleeps), and it drives the Debian build over CDP
with no separate driver package whose version must match the browser's. Browsers are never downloaded
(`playwright install` is never run): deploy/local/browser.sh installs Debian's chromium when missing.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import TEST_SURVEY_SIGNING_KEY, Platform, auth, unique, wait_until
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect
from topics import produce

from aftersales.feedback import tokens
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.testing import ticket_created, work_order_resolved

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the suite runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SUPERVISOR = auth("dev-supervisor-token")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path, installed by deploy/local/browser.sh when missing: no browser fails the test."""
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/local/browser.sh")], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        pytest.fail(f"deploy/local/browser.sh failed:\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


class Customer:
    """One browser context (a phone in one language) that records what would break the page silently:
    script errors and Content-Security-Policy refusals."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.problems: list[str] = []

    @classmethod
    async def open(cls, browser: Browser, locale: str) -> Customer:
        context = await browser.new_context(locale=locale, viewport={"width": 390, "height": 844})
        return cls(context)

    async def visit(self, url: str, status: int) -> Page:
        page = await self.context.new_page()
        page.on("pageerror", lambda exc: self.problems.append(f"script error: {exc}"))
        page.on("console", self._console)
        response = await page.goto(url)
        assert response is not None and response.status == status, url
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.problems.append(message.text)


async def send(platform: Platform, topic: Topic, event: CloudEvent) -> None:
    await produce(
        platform.infra, platform.topic(topic), event.value(), key=event.key, headers=event.headers()
    )


async def listed_survey(client: httpx.AsyncClient, url: str, ticket_id: str) -> dict[str, Any] | None:
    r = await client.get(f"{url}/v1/surveys", params={"ticket_id": ticket_id}, headers=SUPERVISOR)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items[0] if items else None


async def test_a_customer_answers_the_survey_in_a_browser_once(platform: Platform, browser: Browser) -> None:
    url = (await platform.start_ready("feedback"))["feedback"].url
    ticket = unique("T-")
    await send(platform, Topic.TICKETS, ticket_created(ticket))
    await send(platform, Topic.ASSIGNMENTS, work_order_resolved(ticket))
    async with httpx.AsyncClient(timeout=10) as client:
        survey = await wait_until("survey sent", lambda: listed_survey(client, url, ticket))
        link = survey["link"]
        assert link == f"{url}/v1/surveys/{survey['token']}"  # the service's own address by default

        zh = await Customer.open(browser, "zh-CN")
        page = await zh.visit(link, 200)
        await expect(page.locator("h1").first).to_have_text("服务满意度调查")
        await expect(page.locator("#ticket")).to_have_text(ticket)
        await page.click("button[type=submit]")  # no stars chosen yet: the page asks, nothing is sent
        await expect(page.locator("#problem")).to_have_text("请先选择满意度星级。")
        await page.click("label[for=csat-4]")
        await page.click("label[for=nps-9]")
        await page.fill("#comment", "师傅很专业 <b>thanks</b>")
        await page.click("button[type=submit]")
        await expect(page.locator("#state-done h1")).to_have_text("感谢您的反馈！")
        await expect(page.locator("form#survey")).to_be_hidden()

        r = await client.get(f"{url}/v1/surveys/results", params={"ticket_id": ticket}, headers=SUPERVISOR)
        assert r.status_code == 200, r.text
        summary, [answered] = r.json()["summary"], r.json()["surveys"]
        assert (summary["submitted"], summary["csat_average"], summary["nps"]) == (1, 4.0, 100.0)
        assert (answered["csat"], answered["nps"]) == (4, 9)
        assert answered["comment"] == "师傅很专业 <b>thanks</b>"

    # The same link again: "already answered", shown as soon as the page opens.
    again = await zh.visit(link, 409)
    await expect(again.locator("main")).to_have_attribute("data-state", "answered")
    await expect(again.locator("h1")).to_have_text("该问卷已提交过")
    await expect(again.locator("form")).to_have_count(0)

    # In English (Accept-Language from the browser's locale), and ?lang= over it.
    en = await Customer.open(browser, "en-US")
    answered_en = await en.visit(link, 409)
    await expect(answered_en.locator("h1")).to_have_text("This survey has already been answered")
    await answered_en.click("#other-language")
    await expect(answered_en.locator("h1")).to_have_text("该问卷已提交过")
    assert answered_en.url.endswith("?lang=zh")

    # An expired link (a genuine signature, an expiry in the past) and a forged one.
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = tokens.sign(survey["survey_id"], past, TEST_SURVEY_SIGNING_KEY.encode())
    expired_page = await en.visit(f"{url}/v1/surveys/{expired}", 410)
    await expect(expired_page.locator("h1")).to_have_text("This link has expired")
    expired_zh = await zh.visit(f"{url}/v1/surveys/{expired}", 410)
    await expect(expired_zh.locator("h1")).to_have_text("链接已过期")
    forged = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    invalid = await en.visit(forged, 403)
    await expect(invalid.locator("h1")).to_have_text("This link is not valid")

    assert zh.problems == [] and en.problems == []
    await zh.context.close()
    await en.context.close()
