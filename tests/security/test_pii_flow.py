"""Personal data does not leave the service that received it: a full lifecycle with phone numbers, e-mail
addresses and card numbers (inside Chinese text too) in every free-text field, then every event on every
topic and every log line of every service is read and searched for them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from followup_events import AROUND_THE_CLOCK
from harness import Platform, read_topic, wait_until
from security_helpers import ADMIN, SUPERVISOR, TECH, WEB, assigned_to, set_up_routing, submit, work

from aftersales.shared.contracts import Topic
from aftersales.shared.pii import mask_pii, mask_value, redact_pii

# Not yet run under the after-test checks (tests/conftest.py): opted out of both until it is.
pytestmark = [
    pytest.mark.expect_tracebacks("contact data pushed through every free-text field of a full lifecycle"),
    pytest.mark.expect_dlq("contact data pushed through every free-text field of a full lifecycle"),
]

PHONE, CN_PHONE, DOTTED = "+8613912345678", "13987654321", "139.8765.4321"
EMAIL, IDN_EMAIL = "zhang.wei@example.cn", "张伟@例子.中国"
CARD = "4111 1111 1111 1111"
FREE_TEXT = f"电话{CN_PHONE}，邮箱{EMAIL}，卡号{CARD.replace(' ', '')}，或 {DOTTED}，{IDN_EMAIL}"
# What must appear nowhere outside intake: each secret, and the digits of each number on their own.
NEEDLES = (
    PHONE,
    PHONE[3:],
    CN_PHONE,
    DOTTED,
    DOTTED.replace(".", ""),
    EMAIL,
    IDN_EMAIL,
    CARD,
    CARD.replace(" ", ""),
)


@pytest.mark.parametrize(
    "text",
    [
        f"电话{CN_PHONE}请回电",
        f"call {DOTTED} today",
        f"邮箱{IDN_EMAIL}谢谢",
        "mail josé@exämple.com",
        f"卡号{CARD.replace(' ', '')}谢谢",
        f"+86 139 1234 5678 或 {PHONE}",
        "１３９１２３４５６７８",
    ],
)
def test_the_masker_finds_contact_data_in_any_script(text: str) -> None:
    for out in (mask_pii(text), redact_pii(text)):
        assert not any(needle in out for needle in NEEDLES)
        assert "josé@" not in out and "12345678" not in out and "１２３４５６７８" not in out


def test_the_masker_walks_dicts_and_lists_and_keeps_ids() -> None:
    masked = mask_value({"customer": {"phones": [PHONE, f"手机{CN_PHONE}"]}, "n": 3, "note": EMAIL})
    assert not any(needle in str(masked) for needle in NEEDLES) and masked["n"] == 3
    kept = "ticket TK-20261124-0001 on 2026-11-24 10:00, priority P2, 3 alerts, v1.2.3"
    assert mask_pii(kept) == kept == redact_pii(kept)


async def test_no_contact_data_leaves_the_service_that_received_it(platform: Platform) -> None:
    await platform.start_ready(
        "intake",
        "routing",
        "followup",
        "feedback",
        "metrics",
        PUBLISH_REPORTS="false",
        CALLBACK_DELAY_S="0",
        **AROUND_THE_CLOCK,
    )
    intake, followup, feedback = platform.url("intake"), platform.url("followup"), platform.url("feedback")
    async with httpx.AsyncClient(timeout=10) as client:
        await set_up_routing(client, platform)
        body = {
            "channel": "web",
            "customer": {
                "name": "张伟",
                "phone": PHONE,
                "email": EMAIL,
                "region_code": "310000/310100/310104",
                "address": f"上海市徐汇区 1 号, {FREE_TEXT}",
            },
            "product": {"device_type": "air_conditioner", "model": f"KF-35 {CN_PHONE}", "serial": "AC-PII"},
            "title": f"空调坏了 {FREE_TEXT}"[:200],
            "description": f"It does not cool. {FREE_TEXT}",
            "external_ref": f"ref {EMAIL}",
        }
        ticket = await submit(client, platform, body, WEB)
        tid = ticket["id"]
        assert await assigned_to(client, platform, tid) == "tech-demo"
        await work(client, platform, tid, "accept", TECH)
        await work(client, platform, tid, "pending-customer", TECH, reason=f"客户不在家 {FREE_TEXT}")
        reply = await client.post(
            f"{intake}/v1/tickets/{tid}/customer-reply",
            json={"message": f"我在家了 {FREE_TEXT}"},
            headers=WEB,
        )
        assert reply.status_code in (200, 409), reply.text
        started = await client.post(
            f"{platform.url('routing')}/v1/work-orders/{tid}/start", json={}, headers=TECH
        )
        assert started.status_code in (200, 409), started.text
        await work(client, platform, tid, "resolve", TECH, resolution_code="replaced_part")

        async def callback(round_: int) -> dict[str, Any] | None:
            response = await client.get(
                f"{followup}/v1/visits", params={"ticket_id": tid}, headers=SUPERVISOR
            )
            found = [
                v
                for v in response.json()["items"]
                if v["kind"] == "callback" and v["round"] == round_ and v["status"] == "due"
            ]
            return found[0] if found else None

        first = await wait_until("first callback", lambda: callback(1), 40)
        response = await client.post(
            f"{followup}/v1/visits/{first['id']}/outcome",
            json={"outcome": "not_resolved", "note": f"客户说还是坏的 {FREE_TEXT}"},
            headers=SUPERVISOR,
        )
        assert response.status_code == 200, response.text
        assert await assigned_to(client, platform, tid) == "tech-demo"  # reopened, back to the same one
        await work(client, platform, tid, "accept", TECH)
        await work(client, platform, tid, "resolve", TECH, resolution_code="replaced_compressor")
        second = await wait_until("second callback", lambda: callback(2), 40)
        response = await client.post(
            f"{followup}/v1/visits/{second['id']}/outcome",
            json={"outcome": "confirmed_resolved", "note": f"好了 {FREE_TEXT}"},
            headers=SUPERVISOR,
        )
        assert response.status_code == 200, response.text

        async def survey() -> dict[str, Any] | None:
            response = await client.get(
                f"{feedback}/v1/surveys", params={"ticket_id": tid}, headers=SUPERVISOR
            )
            open_ = [s for s in response.json()["items"] if s.get("token")]
            return open_[0] if open_ else None

        link = await wait_until("a survey", survey, 40)
        answered = await client.post(
            f"{feedback}/v1/surveys/{link['token']}", json={"csat": 1, "nps": 0, "comment": f"差 {FREE_TEXT}"}
        )
        assert answered.status_code == 200, answered.text
        complaint = await client.post(
            f"{feedback}/v1/complaints",
            json={"ticket_id": tid, "summary": f"投诉 {FREE_TEXT}"},
            headers=SUPERVISOR,
        )
        assert complaint.status_code == 201, complaint.text
        moved = await client.post(
            f"{feedback}/v1/complaints/{complaint.json()['id']}/transition",
            json={"to": "investigating", "owner_id": "sup-1", "note": f"回电 {FREE_TEXT}"},
            headers=SUPERVISOR,
        )
        assert moved.status_code == 200, moved.text
        assert not any(n in moved.text for n in NEEDLES)  # stored free text is scrubbed as well

        # A second ticket: handed back with a reason, then cancelled with one.
        other = await submit(client, platform, {**body, "title": "another"}, WEB)
        assert await assigned_to(client, platform, other["id"]) == "tech-demo"
        await work(client, platform, other["id"], "hand-back", TECH, reason=f"不是我的区 {FREE_TEXT}")
        cancelled = await client.post(
            f"{intake}/v1/tickets/{other['id']}/cancel", json={"reason": f"客户取消 {FREE_TEXT}"}, headers=WEB
        )
        assert cancelled.status_code == 200, cancelled.text

        async def closed() -> bool:
            response = await client.get(f"{intake}/v1/tickets/{tid}", headers=ADMIN)
            return bool(response.json()["status"] == "closed")

        await wait_until("ticket closed", closed, 40)

    # Every event on every topic the services publish, and their dead-letter topics.
    events: list[str] = []
    for topic in (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK, Topic.REPORTS):
        for name in (platform.topic(topic), platform.topic(topic.dlq)):
            records = await read_topic(platform.infra, name, expect=10**6, timeout_s=4)
            for r in records:
                headers = " ".join(f"{k}={v.decode(errors='replace')}" for k, v in r.headers or ())
                events.append(f"{name} {r.key!r} {headers} {(r.value or b'').decode(errors='replace')}")
    types = " ".join(events)
    for expected in (
        "ticket.reopened",
        "ticket.cancelled",
        "assignment.pending",
        "followup.reopen-requested",
        "complaint-updated",
        "survey-submitted",
        "ticket.closed",
    ):
        assert expected in types, expected
    leaks = [(needle, e[:200]) for e in events for needle in NEEDLES if needle in e]
    assert leaks == []
    assert "[phone]" in types and "[email]" in types  # the reasons arrived, scrubbed

    # Every log line of every service.
    lines = 0
    for proc in platform.processes:
        for line in proc.log_path.read_text(errors="replace").splitlines():
            lines += 1
            assert not any(needle in line for needle in NEEDLES), line[:300]
    assert lines > 0
