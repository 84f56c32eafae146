"""Tencent Cloud SMS (API 3.0, TC3-HMAC-SHA256): the signature reproduces Tencent's documented example, and
the adapter's SendSms requests pass a local HTTP server that verifies the signature independently."""

from __future__ import annotations

import hashlib

import pytest
from notify_receivers import provider_stub

from aftersales.notify.app import Settings
from aftersales.notify.channels import Outgoing, Refused
from aftersales.notify.channels.tencent import (
    SmsTemplate,
    TencentSms,
    TencentSmsChannel,
    authorization,
    tc3_signature,
)
from aftersales.notify.domain import ChannelName, Language, Recipient, RecipientKind
from aftersales.notify.templates import DEFAULTS
from aftersales.shared.testing import FAST

CUSTOMER = Recipient("customer:C-1", RecipientKind.CUSTOMER, (ChannelName.SMS,), phone="+8613800138000")
MESSAGE = Outgoing(
    "E-1|customer:C-1|sms",
    "appointment_confirmed",
    {"ticket_id": "T-42", "window": "2026-12-01 09:00-11:00 (Asia/Shanghai)"},
    DEFAULTS[Language.ZH]["ticket_acknowledged"].render({"ticket_id": "T-42"}),
)
TEMPLATES = {"appointment_confirmed": SmsTemplate("449739", ("ticket_id", "window"))}


def test_tc3_signature_matches_the_documented_example() -> None:
    # Tencent Cloud API 3.0 "Signature v3" example: CVM DescribeInstances, POST, timestamp 1551113065.
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    assert hashlib.sha256(payload).hexdigest() == (
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    signature = tc3_signature(
        secret_key="Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
        service="cvm",
        host="cvm.tencentcloudapi.com",
        payload=payload,
        timestamp=1551113065,
    )
    assert signature == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    assert authorization(
        secret_id="AKIDEXAMPLE", service="cvm", timestamp=1551113065, signature=signature
    ) == (
        "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2019-02-25/cvm/tc3_request, SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


async def test_send_sms_is_signed_as_tencent_checks_it() -> None:
    with provider_stub() as stub:
        url = f"{stub.url}/tencent"
        provider = TencentSms(url, "AKID-test", stub.tencent_secret, "1400006666", "售后服务", TEMPLATES)
        await TencentSmsChannel(provider).send(CUSTOMER, MESSAGE)
        [request] = stub.of("tencent")
        assert request.signature_ok
        assert (
            request.headers["x-tc-version"] == "2021-01-11"
            and request.headers["x-tc-region"] == "ap-guangzhou"
        )
        assert request.body["PhoneNumberSet"] == ["+8613800138000"]
        assert request.body["TemplateId"] == "449739" and request.body["SmsSdkAppId"] == "1400006666"
        assert request.body["TemplateParamSet"] == ["T-42", "2026-12-01 09:00-11:00 (Asia/Shanghai)"]
        wrong = TencentSms(url, "AKID-test", "not-the-secret", "1400006666", "售后服务", TEMPLATES)
        with pytest.raises(Refused) as refused:
            await TencentSmsChannel(wrong).send(CUSTOMER, MESSAGE)
        assert refused.value.kind == "tencent:AuthFailure.SignatureFailure"
        with pytest.raises(Refused) as refused:
            await TencentSmsChannel(provider).send(
                CUSTOMER, MESSAGE.__class__("x", "survey_invitation", {}, MESSAGE.rendered)
            )
        assert refused.value.kind == "no_sms_template_for_survey_invitation"


def test_sms_provider_tencent_is_selected_by_setting() -> None:
    with pytest.raises(ValueError, match="TENCENT_SECRET_ID"):
        Settings(**FAST, sms_provider="tencent")
    settings = Settings(
        **FAST,
        sms_provider="tencent",
        tencent_secret_id="AKID-test",
        tencent_secret_key="secret",
        tencent_sms_sdk_app_id="1400006666",
        tencent_sms_sign_name="售后服务",
        tencent_sms_templates={"ticket_acknowledged": {"id": "1", "params": ["ticket_id"]}},
    )
    channel = settings.channels()[ChannelName.SMS]
    assert isinstance(channel, TencentSmsChannel)
    assert channel.provider.templates["ticket_acknowledged"] == SmsTemplate("1", ("ticket_id",))
