"""`make up` demo: seed grids and technicians, send tickets from several channels, and show the platform
working: tickets assigned within seconds, one reassigned by a supervisor by hand (改派), one offered in a
grid's grab-order pool (抢单) and claimed by the demo technician (`desk_demo.py`), one visited on site
(booked, checked in, a part from the van, a service report signed by the customer and verified by its
SHA-256), fixed and followed up, a survey sent, KPIs computed (the on-site ones too).

Idempotent: tickets carry fixed Idempotency-Keys, so running `make up` again shows the same tickets (and
the reassignment and the claim made before).
"""

from __future__ import annotations

import email
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import httpx
from desk_demo import grab_from_pool, reassign_by_hand
from routing_demo import demo_calendar, demo_data

from aftersales.shared.calendar import BusinessCalendar, working_intervals

URLS = {
    "intake": "http://127.0.0.1:8001",
    "routing": "http://127.0.0.1:8002",
    "followup": "http://127.0.0.1:8003",
    "feedback": "http://127.0.0.1:8004",
    "metrics": "http://127.0.0.1:8005",
    "notify": "http://127.0.0.1:8006",
    "fieldwork": "http://127.0.0.1:8007",
}
CACHE = Path(
    os.environ.get("AFTERSALES_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aftersales"
)
MAILDIR = CACHE / "mail" / "new"  # where `make up`'s SMTP sink drops notify's mails
ADMIN = {"Authorization": "Bearer dev-admin-token"}
DEADLINE_S = 120

TICKETS: list[dict[str, Any]] = [
    {
        "key": "demo-phone-1",
        "token": "dev-phone-token",
        "body": {
            "channel": "phone",
            "customer": {
                "name": "Li Lei",
                "phone": "+8613800138000",
                "tier": "gold",
                "region_code": "310000/310100/310104",
                "address": "Xuhui District",
            },
            "product": {
                "device_type": "air_conditioner",
                "model": "AC-9000",
                "serial": "AC9-000123",
                "purchase_date": "2025-06-01",
            },
            "title": "Air conditioner not cooling",
            "description": "The unit runs but blows warm air since yesterday.",
        },
    },
    {
        "key": "demo-web-1",
        "token": "dev-web-token",
        "body": {
            "channel": "web",
            "customer": {
                "name": "Han Meimei",
                "email": "han.meimei@example.com",
                "region_code": "310000/310100/310101",
            },
            "product": {"device_type": "washing_machine", "model": "WM-7", "purchase_date": "2021-03-15"},
            "title": "How do I run the drum cleaning programme?",
            "description": "Manual lost; need the steps for drum cleaning.",
        },
    },
    {
        "key": "demo-web-2",
        "token": "dev-web-token",
        "body": {
            "channel": "web",
            "customer": {
                "name": "Wang Fang",
                "email": "wang.fang@example.com",
                "tier": "key_account",
                "region_code": "310000/310100/310115/115005",
            },
            "product": {"device_type": "refrigerator", "model": "FR-500", "purchase_date": "2026-10-20"},
            "title": "Installation of new refrigerator",
            "description": "Delivered today, please install.",
        },
    },
]
IOT_ALERTS = 3  # the same device and fault three times: one ticket, alert count 3


def main() -> int:
    client = httpx.Client(timeout=10.0)
    running = wait_ready(client)
    if "routing" in running:
        seed_routing(client)
    if "intake" not in running:
        print("[demo] intake is not running; nothing to show")
        return 1
    tickets = send_tickets(client)
    mails_before = set(MAILDIR.glob("*")) if MAILDIR.is_dir() else set()
    if "notify" in running:
        register_contact(client, tickets[0], TICKETS[0]["token"])
    show_assignments(client, tickets, "routing" in running)
    if "routing" in running:
        reassign_by_hand(client, URLS, tickets[1:])  # not the first ticket: it is visited and fixed below
        grab_from_pool(client, URLS)
    if "fieldwork" in running and "routing" in running:
        visit_on_site(client, tickets[0], TICKETS[0]["token"])
    if "routing" in running:
        fix_first_ticket(client, tickets[0])
    if "followup" in running:
        show_followup(client, tickets[0])
    if "feedback" in running:
        show_survey(client, tickets[0])
    if "metrics" in running:
        show_kpis(client)
    if "notify" in running:
        show_mails(mails_before)
    return 0


def register_contact(client: httpx.Client, ticket: dict[str, Any], token: str) -> None:
    """The channel that took the first ticket gives notify its customer's e-mail (notify holds its own copy
    of the contact points; no event carries them). Quiet hours off, so the demo mails go out at any hour."""
    body = {"channels": ["email"], "language": "en", "email": "li.lei@example.org", "do_not_disturb": None}
    url = f"{URLS['notify']}/v1/recipients/customers/{ticket['customer_id']}"
    check(client.put(url, json=body, headers={"Authorization": f"Bearer {token}"}), "recipient")
    print("[demo] notify: the phone channel registered the customer's e-mail for messages")


def show_mails(before: set[Path]) -> None:
    """Wait for the acknowledgement and the survey mail in the SMTP sink's Maildir and show them."""
    deadline = time.monotonic() + 75  # a message whose event came before the contact is retried in 30 s
    new: list[Path] = []
    while time.monotonic() < deadline:
        new = sorted(set(MAILDIR.glob("*")) - before) if MAILDIR.is_dir() else []
        if len(new) >= 2:
            break
        time.sleep(2)
    if not new:
        print(f"[demo] notify: no new mail in {MAILDIR} (a re-run sends nothing twice; see notify's log)")
        return
    for path in new:
        message = email.message_from_bytes(path.read_bytes())
        subject = str(make_header(decode_header(message.get("Subject", ""))))
        print(f"[demo] mail to {message.get('To')}: {subject}")
    print(f"[demo] the mails are files in {MAILDIR}")


def wait_ready(client: httpx.Client) -> set[str]:
    deadline = time.monotonic() + DEADLINE_S
    pending = set(URLS)
    ready: set[str] = set()
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            try:
                if client.get(f"{URLS[name]}/readyz").status_code == 200:
                    ready.add(name)
            except httpx.HTTPError:
                continue
        pending -= ready
        if pending:
            time.sleep(0.5)
    for name in sorted(pending):
        print(f"[demo] {name} did not become ready within {DEADLINE_S}s (see its log)")
    print(f"[demo] ready: {', '.join(sorted(ready)) or 'none'}")
    return ready


def seed_routing(client: httpx.Client) -> None:
    data = demo_data()
    for grid in data["grids"]:
        check(client.put(f"{URLS['routing']}/v1/grids/{grid['id']}", json=grid, headers=ADMIN), "grid")
    for tech in data["technicians"]:
        check(
            client.put(f"{URLS['routing']}/v1/technicians/{tech['id']}", json=tech, headers=ADMIN),
            "technician",
        )
    print(
        f"[demo] routing: {len(data['grids'])} service grids (网格), {len(data['technicians'])} technicians"
    )


def send_tickets(client: httpx.Client) -> list[dict[str, Any]]:
    created = []
    for spec in TICKETS:
        headers = {"Authorization": f"Bearer {spec['token']}", "Idempotency-Key": spec["key"]}
        created.append(
            check(client.post(f"{URLS['intake']}/v1/tickets", json=spec["body"], headers=headers), "ticket")
        )
    iot_body: dict[str, Any] = {
        "channel": "iot",
        "customer": {"id": "CUST-IOT-1", "region_code": "310000/310100/310106", "tier": "key_account"},
        "product": {
            "device_type": "water_heater",
            "model": "WH-3",
            "serial": "WH3-777001",
            "purchase_date": "2024-09-01",
        },
        "title": "Remote monitoring: overheating",
        "iot": {"fault_code": "E07", "severity": 4, "observed_at": ""},
    }
    iot_ticket: dict[str, Any] = {}
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for n in range(IOT_ALERTS):
        # The same alerts all day (a replay is the same request), a new storm the next day.
        iot_body["iot"]["observed_at"] = (day + timedelta(seconds=n)).isoformat()
        key = f"demo-iot-{day:%Y%m%d}-{n}"
        headers = {"Authorization": "Bearer dev-iot-token", "Idempotency-Key": key}
        iot_ticket = check(
            client.post(f"{URLS['intake']}/v1/tickets", json=iot_body, headers=headers), "alert"
        )
    created.append(iot_ticket)
    print(
        f"[demo] intake: {len(TICKETS)} tickets from phone/web, {IOT_ALERTS} IoT alerts folded into 1 ticket"
    )
    return created


def show_assignments(client: httpx.Client, tickets: list[dict[str, Any]], routing: bool) -> None:
    deadline = time.monotonic() + 30
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = {
            t["id"]: check(client.get(f"{URLS['intake']}/v1/tickets/{t['id']}", headers=ADMIN), "read")
            for t in tickets
        }
        if not routing or all(r["status"] != "new" for r in rows.values()):
            break
        time.sleep(0.5)
    print()
    print(
        f"{'TICKET':<26} {'CHANNEL':<8} {'CATEGORY':<16} {'PRI':<4} {'STATUS':<12} {'TECHNICIAN':<12} ALERTS"
    )
    for ticket_id, row in rows.items():
        print(
            f"{ticket_id:<26} {row['channel']:<8} {row['category']:<16} {row['priority']:<4} "
            f"{row['status']:<12} {row.get('technician_id') or '-':<12} {row.get('alert_count') or 1}"
        )
    print()


def fix_first_ticket(client: httpx.Client, ticket: dict[str, Any]) -> None:
    base = f"{URLS['routing']}/v1/work-orders/{ticket['id']}"
    steps = [("accept", {}), ("start", {}), ("resolve", {"resolution_code": "replaced_part"})]
    for step, body in steps:
        response = client.post(f"{base}/{step}", json=body, headers=ADMIN)
        if response.status_code == 409:
            continue  # already past this step (make up ran before)
        check(response, step)
    print(f"[demo] technician accepted, started and resolved {ticket['id']}")


FIELD_PART = "FAN-AC9"  # the spare part the demo visit uses, from the technician's van (备件)
FIELD_LINE = "demo-line-1"  # the report line's client id: a re-run takes nothing more from the stock


def visit_on_site(client: httpx.Client, ticket: dict[str, Any], channel_token: str) -> None:
    """The first ticket's visit (上门): book it, set off, check in, write the service report with a part
    from the van, check out, let the customer sign; print the report's hash, its verification and the
    page the customer sees. A re-run finds the signed report and only shows it."""
    fw = URLS["fieldwork"]
    technician = field_holder(client, ticket["id"])
    if technician is None:
        print(f"[demo] fieldwork: no technician holds {ticket['id']} yet; no visit shown")
        return
    reports = check(
        client.get(f"{fw}/v1/reports", params={"ticket_id": ticket["id"]}, headers=ADMIN), "reports"
    )
    signed = [r for r in reports["items"] if r["status"] == "signed"]
    if signed:
        print(f"[demo] fieldwork: {ticket['id']} was visited and its report signed before (a re-run)")
        show_report(client, signed[-1], channel_token)
        return
    van = f"van:{technician}"
    stock = client.get(f"{fw}/v1/stock/{van}/{FIELD_PART}", headers=ADMIN)
    if stock.status_code != 200 or stock.json()["on_hand"] < 1:
        receipt = {"quantity": 5, "low_stock_threshold": 1, "unit_cost_cents": 4800}  # 48.00 yuan each
        check(client.post(f"{fw}/v1/stock/{van}/{FIELD_PART}/receipts", json=receipt, headers=ADMIN), "stock")
        print(f"[demo] fieldwork: 5 x {FIELD_PART} at 48.00 received into {van}")
    appointment = book_visit(client, ticket["id"], technician)
    print(
        f"[demo] fieldwork: visit {appointment['id']} booked for {technician}, {appointment['window_start']}"
    )
    visit = f"{fw}/v1/appointments/{appointment['id']}"
    for step in ("depart", "check-in"):
        step_once(client, f"{visit}/{step}", {}, step)
    drafts = [r for r in reports["items"] if r["status"] == "draft"]
    report = (
        drafts[-1]
        if drafts
        else check(
            client.post(
                f"{fw}/v1/reports",
                json={
                    "ticket_id": ticket["id"],
                    "work_performed": "换风扇 replaced the condenser fan",
                    "resolution_code": "replaced_part",
                },
                headers=ADMIN,
            ),
            "report",
        )
    )
    line = {"line_id": FIELD_LINE, "part_id": FIELD_PART, "location_id": van, "quantity": 1}
    check(client.post(f"{fw}/v1/reports/{report['id']}/parts", json=line, headers=ADMIN), "parts")
    done = step_once(client, f"{visit}/check-out", {"work_done": "replaced the condenser fan"}, "check-out")
    if done:
        print(f"[demo] fieldwork: checked in and out, travel {done['travel_s']} s, work {done['work_s']} s")
    strokes = [[[10, 40], [30, 20], [50, 45], [70, 15]], [[80, 40], [110, 38]]]
    signature = {"signer_name": "Li Lei", "strokes": strokes}
    signed_report = check(
        client.post(f"{fw}/v1/reports/{report['id']}/sign", json=signature, headers=ADMIN), "sign"
    )
    show_report(client, signed_report, channel_token)


def field_holder(client: httpx.Client, ticket_id: str) -> str | None:
    """Wait until fieldwork knows (from routing's events) which technician holds the ticket."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get(f"{URLS['fieldwork']}/v1/work-orders/{ticket_id}", headers=ADMIN)
        if response.status_code == 200 and response.json().get("technician_id"):
            technician: str = response.json()["technician_id"]
            return technician
        time.sleep(0.5)
    return None


def book_visit(client: httpx.Client, ticket_id: str, technician: str) -> dict[str, Any]:
    """Return the ticket's visit booked by an earlier, interrupted run (today or on the next window's
    day), else book the next two hours inside the grids' business hours (fieldwork refuses a window
    outside them: at night the visit is the next working morning's)."""
    now = datetime.now(UTC)
    start, end = next_visit_window(now)
    for day in sorted({now.date(), start.date()}):
        listed = client.get(
            f"{URLS['fieldwork']}/v1/technicians/{technician}/day",
            params={"date": day.isoformat(), "timezone": "UTC"},
            headers=ADMIN,
        )
        if listed.status_code != 200:
            continue
        for appointment in listed.json()["appointments"]:
            if appointment["ticket_id"] == ticket_id and appointment["status"] not in (
                "cancelled",
                "no_show",
            ):
                found: dict[str, Any] = appointment
                return found
    window = {"ticket_id": ticket_id, "window_start": start.isoformat(), "window_end": end.isoformat()}
    return check(client.post(f"{URLS['fieldwork']}/v1/appointments", json=window, headers=ADMIN), "booking")


VISIT_LENGTH = timedelta(hours=2)


def next_visit_window(now: datetime) -> tuple[datetime, datetime]:
    """Return the first VISIT_LENGTH from `now` on that lies in one working interval of the demo grids'
    calendar (routing_demo's, the one `make up` gives every grid)."""
    calendar = BusinessCalendar.model_validate(demo_calendar())
    for lo, hi in working_intervals(now, calendar):
        if hi - lo >= VISIT_LENGTH:
            return lo, lo + VISIT_LENGTH
    raise SystemExit("[demo] the demo calendar has no working interval long enough for a visit")


def step_once(client: httpx.Client, url: str, body: dict[str, Any], what: str) -> dict[str, Any] | None:
    """Take a visit's step; None when it was taken before (409: an earlier run got past it)."""
    response = client.post(url, json=body or None, headers=ADMIN)
    if response.status_code == 409:
        return None
    return check(response, what)


def show_report(client: httpx.Client, report: dict[str, Any], channel_token: str) -> None:
    """Print the signed report's hash, the verification recomputed by fieldwork and the customer's page."""
    url = f"{URLS['fieldwork']}/v1/reports/{report['id']}"
    verified = check(client.get(f"{url}/verification", headers=ADMIN), "verification")
    parts = ", ".join(f"{p['quantity']} x {p['part_id']}" for p in report["parts"]) or "none"
    print(
        f"[demo] service report (服务报告) {report['id']} signed by {report['signer_name']} "
        f"at {report['signed_at']}"
    )
    print(f"         parts used: {parts}")
    print(f"         SHA-256 {report['content_sha256']}")
    print(
        f"         verification: {'matches' if verified['matches'] else 'DOES NOT MATCH'} "
        f"(recomputed {verified['computed_sha256'][:16]}..., status {verified['status']})"
    )
    print(f"         the customer's page: {url}/view  (Authorization: Bearer {channel_token})")


def show_followup(client: httpx.Client, ticket: dict[str, Any]) -> None:
    visits = poll(client, f"{URLS['followup']}/v1/visits", {"ticket_id": ticket["id"]})
    for visit in visits:
        print(f"[demo] follow-up (回访): {visit['kind']} visit {visit['status']}, due {visit['due_at']}")


def show_survey(client: httpx.Client, ticket: dict[str, Any]) -> None:
    surveys = poll(client, f"{URLS['feedback']}/v1/surveys", {"ticket_id": ticket["id"]})
    for survey in surveys:
        print(f"[demo] satisfaction survey {survey['status']}: {survey.get('link') or survey['id']}")


def show_kpis(client: httpx.Client) -> None:
    headers = {"Authorization": "Bearer dev-supervisor-token"}
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not rows:
        response = client.get(f"{URLS['metrics']}/v1/kpis", params={"group_by": "grid"}, headers=headers)
        if response.status_code != 200:
            print(f"[demo] KPIs not available: {response.status_code} {response.text[:200]}")
            return
        rows = response.json().get("rows", [])
        if not rows:
            time.sleep(0.5)
    print("[demo] KPIs by grid from the metrics service (GET http://127.0.0.1:8005/v1/kpis?group_by=grid):")
    for row in rows:
        kpis = row["kpis"]
        print(
            f"         {row['value']:<20} created={row['counts'].get('created')} "
            f"backlog={row.get('backlog')} "
            f"resolution_rate={kpis.get('resolution_rate')} "
            f"avg_first_response_s={kpis.get('avg_first_response_s')}"
        )
        if row["counts"].get("field_visits") or row["counts"].get("field_resolved"):
            print(
                f"         {'':<20} on site: first_time_fix_rate={kpis.get('first_time_fix_rate')} "
                f"appointment_kept_rate={kpis.get('appointment_kept_rate')} "
                f"avg_travel_s={kpis.get('avg_travel_s')} avg_work_s={kpis.get('avg_work_s')} "
                f"parts_per_resolution={kpis.get('avg_parts_per_field_resolution')}"
            )


def poll(client: httpx.Client, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = client.get(url, params=params, headers=ADMIN)
        if response.status_code == 200 and response.json().get("items"):
            items: list[dict[str, Any]] = response.json()["items"]
            return items
        time.sleep(0.5)
    return []


def check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        print(f"[demo] {what} failed: {response.status_code} {response.text[:300]}")
        sys.exit(1)
    body: dict[str, Any] = response.json()
    return body


if __name__ == "__main__":
    sys.exit(main())
