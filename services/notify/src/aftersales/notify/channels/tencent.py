"""SMS through Tencent Cloud's SMS service (API 3.0, action `SendSms`, version 2021-01-11): a JSON POST
signed with TC3-HMAC-SHA256 as Tencent Cloud documents it.

    CanonicalRequest = "POST\\n/\\n\\n" + "content-type:<ct>\\nhost:<host>\\n" + "\\n"
                       + "content-type;host\\n" + hex(SHA256(body))
    StringToSign     = "TC3-HMAC-SHA256\\n" + timestamp + "\\n" + "<UTC date>/sms/tc3_request\\n"
                       + hex(SHA256(CanonicalRequest))
    SigningKey       = HMAC(HMAC(HMAC("TC3" + SecretKey, date), "sms"), "tc3_request")
    Authorization    = "TC3-HMAC-SHA256 Credential=<SecretId>/<scope>, SignedHeaders=content-type;host, "
                       + "Signature=" + hex(HMAC(SigningKey, StringToSign))

A Tencent SMS template is approved with numbered placeholders ({1}, {2}, ...): each message template maps
to a template id and the names of the parameters that fill the placeholders, in order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from aftersales.notify.channels import Outgoing, Refused, Transient, http_status_error
from aftersales.notify.domain import ChannelName, Recipient

ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = "content-type;host"
# Tencent's codes that mean "not now" rather than "never": rate limits and its own failures.
TRANSIENT_PREFIXES = ("RequestLimitExceeded", "LimitExceeded", "InternalError", "FailedOperation.Frequency")


@dataclass(frozen=True, slots=True)
class SmsTemplate:
    """An approved Tencent SMS template: its id and the message parameters for {1}, {2}, ... in order."""

    id: str
    params: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class TencentSms:
    endpoint: str
    secret_id: str
    secret_key: str
    sdk_app_id: str
    sign_name: str
    templates: Mapping[str, SmsTemplate]
    region: str = "ap-guangzhou"
    timeout_s: float = 10.0

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def tc3_signature(
    *,
    secret_key: str,
    service: str,
    host: str,
    payload: bytes,
    timestamp: int,
    content_type: str = CONTENT_TYPE,
) -> str:
    """Return the hex TC3-HMAC-SHA256 signature of a POST of `payload` to `host` (path `/`)."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    canonical = f"POST\n/\n\ncontent-type:{content_type}\nhost:{host}\n\n{SIGNED_HEADERS}\n{_sha256(payload)}"
    to_sign = f"{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{_sha256(canonical.encode())}"
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(*, secret_id: str, service: str, timestamp: int, signature: str) -> str:
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return (
        f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
        f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
    )


def send_sms_request(
    provider: TencentSms,
    phone: str,
    template: SmsTemplate,
    params: Mapping[str, str],
    *,
    timestamp: int,
    session: str,
) -> tuple[dict[str, str], bytes]:
    """Return the signed headers and the JSON body of one SendSms request."""
    body = {
        "PhoneNumberSet": [phone if phone.startswith("+") else f"+86{phone}"],
        "SmsSdkAppId": provider.sdk_app_id,
        "SignName": provider.sign_name,
        "TemplateId": template.id,
        "TemplateParamSet": [params.get(name) or "-" for name in template.params],
        "SessionContext": session,
    }
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    signature = tc3_signature(
        secret_key=provider.secret_key,
        service="sms",
        host=provider.host,
        payload=payload,
        timestamp=timestamp,
    )
    headers = {
        "Authorization": authorization(
            secret_id=provider.secret_id, service="sms", timestamp=timestamp, signature=signature
        ),
        "Content-Type": CONTENT_TYPE,
        "Host": provider.host,
        "X-TC-Action": "SendSms",
        "X-TC-Version": "2021-01-11",
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Region": provider.region,
    }
    return headers, payload


class TencentSmsChannel:
    name = ChannelName.SMS

    def __init__(self, provider: TencentSms) -> None:
        self.provider = provider

    async def send(self, recipient: Recipient, message: Outgoing) -> None:
        if recipient.phone is None:
            raise Refused("no_phone_number")
        template = self.provider.templates.get(message.template)
        if template is None:
            raise Refused(f"no_sms_template_for_{message.template}")
        headers, payload = send_sms_request(
            self.provider,
            recipient.phone,
            template,
            message.params,
            timestamp=int(datetime.now(UTC).timestamp()),
            session=hashlib.sha256(message.delivery_id.encode()).hexdigest()[:32],
        )
        try:
            async with httpx.AsyncClient(timeout=self.provider.timeout_s) as client:
                response = await client.post(self.provider.endpoint, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise Transient(f"tencent_{type(exc).__name__}") from None
        if response.status_code != 200:
            raise http_status_error(response.status_code, "tencent")
        _raise_for_answer(_json(response))


def _raise_for_answer(answer: Mapping[str, object]) -> None:
    """Raise for an error of the request (`Response.Error`) or of the one number (`SendStatusSet`)."""
    inner = answer.get("Response")
    inner = inner if isinstance(inner, dict) else {}
    error = inner.get("Error")
    if isinstance(error, dict):
        code = str(error.get("Code", "unknown"))
        raise (Transient if code.startswith(TRANSIENT_PREFIXES) else Refused)(f"tencent:{code}"[:100])
    statuses = inner.get("SendStatusSet")
    if not isinstance(statuses, list) or not statuses:
        raise Transient("tencent:no_send_status")
    code = str(statuses[0].get("Code", "")) if isinstance(statuses[0], dict) else ""
    if code != "Ok":
        raise (Transient if code.startswith(TRANSIENT_PREFIXES) else Refused)(f"tencent:{code}"[:100])


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
