"""Group robots (custom webhooks) of DingTalk, WeCom and Feishu, with their documented JSON payloads and,
where the group has a signing secret, their signatures:

- DingTalk: `timestamp` (ms) and `sign` query parameters, sign = urlencode(base64(HMAC-SHA256(key=secret,
  msg=f"{timestamp}\\n{secret}"))); body `{"msgtype": "text", "text": {"content": ...}}`; answer
  `{"errcode": 0}`.
- WeCom: the key is in the webhook URL, no signature; body `{"msgtype": "text", "text": {"content": ...}}`;
  answer `{"errcode": 0}`.
- Feishu: `timestamp` (s) and `sign` in the body, sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}",
  msg=b"")); body `{"msg_type": "text", "content": {"text": ...}}`; answer `{"code": 0}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import httpx

from aftersales.notify.channels import Outgoing, Refused, Transient, http_status_error
from aftersales.notify.domain import ChannelName, Recipient, Robot

# Error codes that mean "too fast, try later" (DingTalk 130101, WeCom 45009, Feishu 9499/11232).
THROTTLED = frozenset({130101, 45009, 9499, 11232})


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """Return DingTalk's `sign` (base64, before URL-encoding)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def dingtalk_url(robot: Robot, now: datetime) -> str:
    if robot.secret is None:
        return robot.url
    timestamp = int(now.timestamp() * 1000)
    joiner = "&" if "?" in robot.url else "?"
    sign = quote_plus(dingtalk_sign(robot.secret, timestamp))
    return f"{robot.url}{joiner}timestamp={timestamp}&sign={sign}"


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Return Feishu's `sign`: the HMAC key is the timestamp and secret, the message is empty."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def dingtalk_payload(text: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": text}}


def wecom_payload(text: str) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": text}}


def feishu_payload(text: str, robot: Robot, now: datetime) -> dict[str, Any]:
    body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
    if robot.secret is not None:
        timestamp = int(now.timestamp())
        body = {"timestamp": str(timestamp), "sign": feishu_sign(robot.secret, timestamp), **body}
    return body


def _error_code(answer: Mapping[str, Any]) -> int:
    """The robot's error code: 0 is success (`errcode` for DingTalk and WeCom, `code` or the older
    `StatusCode` for Feishu)."""
    for name in ("errcode", "code", "StatusCode"):
        if name in answer:
            try:
                return int(answer[name])
            except (TypeError, ValueError):
                return -1
    return 0


class RobotChannel:
    """One group-robot adapter; what differs between vendors is the URL and the body."""

    def __init__(
        self,
        name: ChannelName,
        request: Callable[[Robot, str, datetime], tuple[str, dict[str, Any]]],
        timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self._request = request
        self.timeout_s = timeout_s

    async def send(self, recipient: Recipient, message: Outgoing) -> None:
        robot = recipient.robots.get(self.name)
        if robot is None:
            raise Refused(f"no_{self.name.value}_robot")
        url, body = self._request(robot, message.rendered.text, datetime.now(UTC))
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise Transient(f"{self.name.value}_{type(exc).__name__}") from None
        if response.status_code != 200:
            raise http_status_error(response.status_code, self.name.value)
        try:
            answer = response.json()
        except ValueError:
            raise Transient(f"{self.name.value}_unreadable_answer") from None
        code = _error_code(answer if isinstance(answer, dict) else {})
        if code != 0:
            raise (Transient if code in THROTTLED else Refused)(f"{self.name.value}:{code}")


def dingtalk(timeout_s: float = 10.0) -> RobotChannel:
    return RobotChannel(
        ChannelName.DINGTALK, lambda r, text, now: (dingtalk_url(r, now), dingtalk_payload(text)), timeout_s
    )


def wecom(timeout_s: float = 10.0) -> RobotChannel:
    return RobotChannel(ChannelName.WECOM, lambda r, text, now: (r.url, wecom_payload(text)), timeout_s)


def feishu(timeout_s: float = 10.0) -> RobotChannel:
    return RobotChannel(
        ChannelName.FEISHU, lambda r, text, now: (r.url, feishu_payload(text, r, now)), timeout_s
    )
