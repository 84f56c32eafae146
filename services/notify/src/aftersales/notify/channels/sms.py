"""SMS through Aliyun's SMS service (Dysmsapi `SendSms`, RPC style): the request's parameters, signed
with HMAC-SHA1 as Aliyun documents for RPC APIs (signature version 1.0).

    canonical   = "&".join(enc(k) + "=" + enc(v) for k, v in sorted(params))
    to_sign     = "GET&" + enc("/") + "&" + enc(canonical)
    Signature   = base64(HMAC-SHA1(AccessKeySecret + "&", to_sign))

where `enc` is percent-encoding per RFC 3986 (unreserved characters kept, space as %20, `*` as %2A,
`~` kept). An SMS carries a provider-approved template (TemplateCode) and its variables (TemplateParam),
not free text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from aftersales.notify.channels import Outgoing, Refused, Transient, http_status_error
from aftersales.notify.domain import ChannelName, Recipient

# Aliyun's codes that mean "not now" rather than "never": flow control and throttling.
TRANSIENT_CODES = frozenset(
    {"isv.BUSINESS_LIMIT_CONTROL", "Throttling", "Throttling.User", "ServiceUnavailable", "InternalError"}
)


@dataclass(frozen=True, slots=True)
class AliyunSms:
    endpoint: str
    access_key_id: str
    access_key_secret: str
    sign_name: str
    template_codes: Mapping[str, str]
    region_id: str = "cn-hangzhou"
    timeout_s: float = 10.0


def percent_encode(text: str) -> str:
    """RFC 3986 percent-encoding as Aliyun's signature wants it."""
    return quote(text, safe="-_.~")


def string_to_sign(params: Mapping[str, str], method: str = "GET") -> str:
    canonical = "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical)}"


def signature(params: Mapping[str, str], access_key_secret: str, method: str = "GET") -> str:
    """Return the base64 HMAC-SHA1 signature of an RPC request's parameters (not URL-encoded)."""
    digest = hmac.new(
        f"{access_key_secret}&".encode(), string_to_sign(params, method).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def send_sms_params(
    provider: AliyunSms,
    phone: str,
    template_code: str,
    template_params: Mapping[str, str],
    *,
    now: datetime,
    nonce: str,
    out_id: str | None = None,
) -> dict[str, str]:
    """Return the signed query parameters of one SendSms request."""
    params = {
        "AccessKeyId": provider.access_key_id,
        "Action": "SendSms",
        "Format": "JSON",
        "PhoneNumbers": phone.removeprefix("+86") if phone.startswith("+86") else phone.lstrip("+"),
        "RegionId": provider.region_id,
        "SignName": provider.sign_name,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce,
        "SignatureVersion": "1.0",
        "TemplateCode": template_code,
        "TemplateParam": json.dumps(dict(template_params), ensure_ascii=False, separators=(",", ":")),
        "Timestamp": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": "2017-05-25",
    }
    if out_id is not None:
        params["OutId"] = out_id
    return {**params, "Signature": signature(params, provider.access_key_secret)}


class SmsChannel:
    name = ChannelName.SMS

    def __init__(self, provider: AliyunSms) -> None:
        self.provider = provider

    async def send(self, recipient: Recipient, message: Outgoing) -> None:
        if recipient.phone is None:
            raise Refused("no_phone_number")
        code = self.provider.template_codes.get(message.template)
        if code is None:
            raise Refused(f"no_sms_template_for_{message.template}")
        params = send_sms_params(
            self.provider,
            recipient.phone,
            code,
            message.params,
            now=datetime.now(UTC),
            nonce=uuid.uuid4().hex,
            out_id=hashlib.sha256(message.delivery_id.encode()).hexdigest()[:32],
        )
        try:
            async with httpx.AsyncClient(timeout=self.provider.timeout_s) as client:
                response = await client.get(self.provider.endpoint, params=params)
        except httpx.HTTPError as exc:
            raise Transient(f"aliyun_{type(exc).__name__}") from None
        answer = _json(response)
        code_ = str(answer.get("Code", ""))
        if response.status_code == 200 and code_ == "OK":
            return
        if code_:
            raise (Transient if code_ in TRANSIENT_CODES else Refused)(f"aliyun:{code_}"[:100])
        raise http_status_error(response.status_code, "aliyun")


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
