"""Each channel adapter against a real server on loopback: an SMTP server (aiosmtpd), and an HTTP server
playing the Aliyun SMS API and the DingTalk, WeCom and Feishu robots, which checks signatures as the
providers document them. Plus Aliyun's documented signature example."""

from __future__ import annotations

import socket

import pytest
from notify_receivers import body_of, provider_stub, smtp_server

from aftersales.notify.channels import Outgoing, Refused, Transient
from aftersales.notify.channels.email import EmailChannel, SmtpServer
from aftersales.notify.channels.robots import dingtalk, feishu, wecom
from aftersales.notify.channels.sms import AliyunSms, SmsChannel, percent_encode, signature
from aftersales.notify.domain import ChannelName, Language, Recipient, RecipientKind, Robot
from aftersales.notify.templates import DEFAULTS

MESSAGE = Outgoing(
    "E-1|customer:C-1|email",
    "ticket_acknowledged",
    {"ticket_id": "T-42"},
    DEFAULTS[Language.ZH]["ticket_acknowledged"].render({"ticket_id": "T-42"}),
)
CUSTOMER = Recipient(
    "customer:C-1",
    RecipientKind.CUSTOMER,
    (ChannelName.EMAIL, ChannelName.SMS),
    email="li@example.com",
    phone="+8613800138000",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_aliyun_signature_matches_the_documented_example() -> None:
    # The SendSms example of Aliyun's SMS API documentation ("签名机制"), with its published result.
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert percent_encode(signature(params, "testSecret")) == "zJDF%2BLrzhj%2FThnlvIToysFRq6t4%3D"


async def test_email_goes_to_a_real_smtp_server_and_a_451_is_transient() -> None:
    port = free_port()
    channel = EmailChannel(SmtpServer("127.0.0.1", port, "aftersales@example.com"))
    with smtp_server(port) as box:
        box.fail_next = 1
        with pytest.raises(Transient) as busy:
            await channel.send(CUSTOMER, MESSAGE)
        assert busy.value.kind == "smtp_451"
        await channel.send(CUSTOMER, MESSAGE)
        [mail] = box.to("li@example.com")
        assert "T-42" in mail["Subject"] and "T-42" in body_of(mail)
        assert mail["From"] == "aftersales@example.com" and mail["Message-ID"]
    with pytest.raises(Transient):  # the server is gone: connection refused is worth a retry
        await channel.send(CUSTOMER, MESSAGE)


async def test_sms_request_is_signed_as_aliyun_checks_it() -> None:
    with provider_stub() as stub:
        codes = {"ticket_acknowledged": "SMS_1"}
        provider = AliyunSms(f"{stub.url}/sms", "key-id", stub.aliyun_secret, "售后服务", codes)
        await SmsChannel(provider).send(CUSTOMER, MESSAGE)
        [sms] = stub.of("sms")
        assert sms.signature_ok
        assert sms.query["PhoneNumbers"] == "13800138000" and sms.query["TemplateCode"] == "SMS_1"
        assert sms.query["TemplateParam"] == '{"ticket_id":"T-42"}'
        wrong = AliyunSms(f"{stub.url}/sms", "key-id", "not-the-secret", "售后服务", codes)
        with pytest.raises(Refused) as refused:
            await SmsChannel(wrong).send(CUSTOMER, MESSAGE)
        assert refused.value.kind == "aliyun:SignatureDoesNotMatch"


async def test_group_robots_get_their_documented_payloads_and_signatures() -> None:
    with provider_stub() as stub:
        staff = Recipient(
            "staff:tech-1",
            RecipientKind.STAFF,
            (ChannelName.DINGTALK, ChannelName.WECOM, ChannelName.FEISHU),
            robots={
                ChannelName.DINGTALK: Robot(f"{stub.url}/dingtalk?access_token=abc", stub.dingtalk_secret),
                ChannelName.WECOM: Robot(f"{stub.url}/wecom?key=abc"),
                ChannelName.FEISHU: Robot(f"{stub.url}/feishu/hook", stub.feishu_secret),
            },
        )
        for channel in (dingtalk(), wecom(), feishu()):
            await channel.send(staff, MESSAGE)
        [ding] = stub.of("dingtalk")
        assert ding.signature_ok and ding.body["msgtype"] == "text" and "T-42" in ding.body["text"]["content"]
        [wx] = stub.of("wecom")
        assert wx.signature_ok and wx.query["key"] == "abc"
        [fs] = stub.of("feishu")
        assert fs.signature_ok and fs.body["msg_type"] == "text" and "T-42" in fs.body["content"]["text"]
        forged = Recipient(
            "staff:tech-2",
            RecipientKind.STAFF,
            (ChannelName.DINGTALK,),
            robots={ChannelName.DINGTALK: Robot(f"{stub.url}/dingtalk?access_token=abc", "SECwrong")},
        )
        with pytest.raises(Refused) as refused:
            await dingtalk().send(forged, MESSAGE)
        assert refused.value.kind == "dingtalk:310000"
