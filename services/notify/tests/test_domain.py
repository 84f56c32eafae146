"""Notify's rules: do-not-disturb deferral (customers only), channels with an address, retries with
backoff, and what an attempt's outcome makes of a delivery."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from hypothesis import given
from hypothesis import strategies as st

from aftersales.notify import domain
from aftersales.notify.domain import (
    ChannelName,
    Delivery,
    DeliveryStatus,
    Language,
    Notice,
    Outcome,
    Recipient,
    RecipientKind,
    RetryPolicy,
    Robot,
)
from aftersales.shared.calendar import DoNotDisturb

QUIET = DoNotDisturb(time(21, 0), time(9, 0))
# 23:30 in Shanghai (UTC+8) is 15:30 UTC; the window ends at 09:00 Shanghai = 01:00 UTC the next day.
LATE_EVENING = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)


def customer(**kw: object) -> Recipient:
    fields: dict[str, object] = {
        "id": "customer:C-1",
        "kind": RecipientKind.CUSTOMER,
        "channels": (ChannelName.EMAIL, ChannelName.SMS),
        "email": "li@example.com",
        "phone": "+8613800138000",
        "do_not_disturb": QUIET,
        **kw,
    }
    return Recipient(**fields)  # type: ignore[arg-type]


def plan(recipient: Recipient, now: datetime) -> list[Delivery]:
    notice = Notice("ticket_acknowledged", recipient.id, {"ticket_id": "T-1"})
    return domain.plan_deliveries(
        notice, recipient, cause_event_id="E-1", cause_event_type="t", ticket_id="T-1", now=now
    )


def test_a_customer_message_in_quiet_hours_waits_for_their_end() -> None:
    deliveries = plan(customer(), LATE_EVENING)
    assert [d.channel for d in deliveries] == [ChannelName.EMAIL, ChannelName.SMS]
    assert all(d.deferred and d.due_at == datetime(2026, 12, 1, 1, 0, tzinfo=UTC) for d in deliveries)
    assert deliveries[0].id == "E-1|customer:C-1|email"


def test_staff_and_on_call_are_reached_at_once_even_at_night() -> None:
    for kind in (RecipientKind.STAFF, RecipientKind.ONCALL, RecipientKind.GRID):
        [d] = plan(customer(id=f"{kind.value}:x", kind=kind, channels=(ChannelName.EMAIL,)), LATE_EVENING)
        assert d.due_at == LATE_EVENING and not d.deferred


def test_only_channels_with_an_address_are_planned() -> None:
    no_phone = customer(phone=None, do_not_disturb=None)
    assert [d.channel for d in plan(no_phone, LATE_EVENING)] == [ChannelName.EMAIL]
    robot = customer(
        kind=RecipientKind.STAFF,
        channels=(ChannelName.DINGTALK, ChannelName.FEISHU),
        robots={ChannelName.DINGTALK: Robot("https://oapi.dingtalk.com/robot/send?access_token=x")},
    )
    assert [d.channel for d in plan(robot, LATE_EVENING)] == [ChannelName.DINGTALK]


def pending() -> Delivery:
    [d] = plan(customer(channels=(ChannelName.EMAIL,), do_not_disturb=None), LATE_EVENING)
    return d


def test_a_transient_failure_retries_after_a_growing_backoff_then_fails() -> None:
    policy = RetryPolicy(max_attempts=3, first_backoff=timedelta(seconds=10))
    d = pending()
    d = domain.after_attempt(policy, d, Outcome.TRANSIENT, "smtp_451", Language.ZH, LATE_EVENING)
    assert (d.status, d.attempts, d.due_at) == (
        DeliveryStatus.PENDING,
        1,
        LATE_EVENING + timedelta(seconds=10),
    )
    assert d.timer_id.endswith(":attempt:2")
    d = domain.after_attempt(policy, d, Outcome.TRANSIENT, "smtp_451", Language.ZH, LATE_EVENING)
    assert d.due_at == LATE_EVENING + timedelta(seconds=20)
    d = domain.after_attempt(policy, d, Outcome.TRANSIENT, "smtp_451", Language.ZH, LATE_EVENING)
    assert (d.status, d.failure, d.last_error) == (DeliveryStatus.FAILED, "retries_exhausted", "smtp_451")


def test_a_refusal_fails_at_once_and_a_success_is_sent() -> None:
    refused = domain.after_attempt(
        RetryPolicy(), pending(), Outcome.REFUSED, "smtp_550", Language.EN, LATE_EVENING
    )
    assert (refused.status, refused.failure, refused.language) == (
        DeliveryStatus.FAILED,
        "refused",
        Language.EN,
    )
    sent = domain.after_attempt(RetryPolicy(), pending(), Outcome.SENT, None, Language.ZH, LATE_EVENING)
    assert (sent.status, sent.attempts, sent.last_error) == (DeliveryStatus.SENT, 1, None)


@given(st.integers(min_value=1, max_value=60))
def test_backoff_never_exceeds_its_cap(attempts: int) -> None:
    policy = RetryPolicy(first_backoff=timedelta(seconds=30), max_backoff=timedelta(hours=1))
    assert timedelta(seconds=30) <= policy.backoff(attempts) <= timedelta(hours=1)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
def test_a_customer_message_never_goes_out_in_quiet_hours(now: datetime) -> None:
    due, deferred = domain.first_attempt_at(customer(), now)
    local = due.astimezone(domain.zone("Asia/Shanghai")).time()
    assert not QUIET.contains(local) and due >= now and deferred == (due > now)


def test_equal_quiet_hours_mean_none() -> None:
    assert domain.do_not_disturb(time(9), time(9)) is None
    assert domain.do_not_disturb(time(22), time(7)) == DoNotDisturb(time(22), time(7))
