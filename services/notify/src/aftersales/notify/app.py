"""Notify service wiring: settings, the runtime, the channel adapters, consumers, timers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Self

from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from aftersales.notify import api, consumers, timers
from aftersales.notify.channels import ChannelAdapter
from aftersales.notify.channels.email import EmailChannel, SmtpServer
from aftersales.notify.channels.robots import dingtalk, feishu, wecom
from aftersales.notify.channels.sms import AliyunSms, SmsChannel
from aftersales.notify.domain import ChannelName, RetryPolicy
from aftersales.notify.service import Catalogue, Notifications, NotifyPolicy
from aftersales.notify.store import (
    DELIVERIES,
    INDEXES,
    DeliveryStore,
    RecipientStore,
    TemplateStore,
    TicketStore,
)
from aftersales.shared.contracts import Topic
from aftersales.shared.http import create_app
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "notify"
    http_port: int = Field(default=8006, ge=1, le=65535)

    smtp_host: str = Field(default="", description="SMTP server for e-mail; empty turns e-mail off")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587 with STARTTLS)")
    smtp_sender: str = Field(default="aftersales@localhost", description="From address of the mails")
    smtp_username: str = Field(default="", description="SMTP login; empty: no authentication")
    smtp_password: SecretStr = Field(default=SecretStr(""), description="SMTP password")
    smtp_starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS")
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=60, description="give up on the SMTP server after")

    sms_provider: Literal["none", "aliyun"] = Field(
        default="none", description="SMS provider; none turns SMS off"
    )
    aliyun_sms_endpoint: str = Field(
        default="https://dysmsapi.aliyuncs.com/", description="Aliyun SMS API endpoint (RPC style, GET)"
    )
    aliyun_access_key_id: str = Field(default="", description="Aliyun AccessKey id")
    aliyun_access_key_secret: SecretStr = Field(default=SecretStr(""), description="Aliyun AccessKey secret")
    aliyun_sms_sign_name: str = Field(default="", description="approved SMS signature (签名) name")
    aliyun_sms_template_codes: dict[str, str] = Field(
        default_factory=dict,
        description='approved SMS template code per message template, e.g. {"ticket_acknowledged": '
        '"SMS_123"} (JSON object); a message without one is not sent by SMS',
    )
    robot_timeout_s: float = Field(default=10.0, gt=0, le=60, description="give up on a group robot after")

    delivery_max_attempts: int = Field(default=5, ge=1, le=20, description="send attempts before failed")
    delivery_backoff_s: float = Field(
        default=30.0, gt=0, description="first retry delay; doubles each attempt"
    )
    delivery_max_backoff_s: float = Field(default=3600.0, gt=0, description="longest retry delay")
    contact_wait_s: float = Field(
        default=30.0, gt=0, description="look again this often for a customer not registered yet"
    )
    contact_wait_rounds: int = Field(
        default=10, ge=0, le=100, description="looks for a customer's contact points before giving up"
    )
    survey_link_template: str = Field(
        default="http://127.0.0.1:8004/v1/surveys/{survey_id}",
        description="the survey link of a survey-sent event without one (older feedback releases); "
        "{survey_id} and {ticket_id} are filled in",
    )

    @model_validator(mode="after")
    def _complete_sms_provider(self) -> Self:
        if self.sms_provider == "aliyun":
            missing = [
                name
                for name, value in (
                    ("ALIYUN_ACCESS_KEY_ID", self.aliyun_access_key_id),
                    ("ALIYUN_ACCESS_KEY_SECRET", self.aliyun_access_key_secret.get_secret_value()),
                    ("ALIYUN_SMS_SIGN_NAME", self.aliyun_sms_sign_name),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"SMS_PROVIDER=aliyun needs {', '.join(missing)}")
        return self

    def policy(self) -> NotifyPolicy:
        """Return the delivery policy these settings describe."""
        return NotifyPolicy(
            retry=RetryPolicy(
                max_attempts=self.delivery_max_attempts,
                first_backoff=timedelta(seconds=self.delivery_backoff_s),
                max_backoff=timedelta(seconds=self.delivery_max_backoff_s),
            ),
            contact_wait=timedelta(seconds=self.contact_wait_s),
            contact_wait_rounds=self.contact_wait_rounds,
            survey_link_template=self.survey_link_template,
        )

    def channels(self) -> dict[ChannelName, ChannelAdapter]:
        """Return the channel adapters these settings turn on (robots are always on: each staff
        recipient brings its own webhook)."""
        adapters: dict[ChannelName, ChannelAdapter] = {
            ChannelName.DINGTALK: dingtalk(self.robot_timeout_s),
            ChannelName.WECOM: wecom(self.robot_timeout_s),
            ChannelName.FEISHU: feishu(self.robot_timeout_s),
        }
        if self.smtp_host:
            adapters[ChannelName.EMAIL] = EmailChannel(
                SmtpServer(
                    host=self.smtp_host,
                    port=self.smtp_port,
                    sender=self.smtp_sender,
                    username=self.smtp_username or None,
                    password=self.smtp_password.get_secret_value() or None,
                    starttls=self.smtp_starttls,
                    timeout_s=self.smtp_timeout_s,
                )
            )
        if self.sms_provider == "aliyun":
            adapters[ChannelName.SMS] = SmsChannel(
                AliyunSms(
                    endpoint=self.aliyun_sms_endpoint,
                    access_key_id=self.aliyun_access_key_id,
                    access_key_secret=self.aliyun_access_key_secret.get_secret_value(),
                    sign_name=self.aliyun_sms_sign_name,
                    template_codes=self.aliyun_sms_template_codes,
                    timeout_s=self.robot_timeout_s,
                )
            )
        return adapters


def build(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=consumers.CONSUMES,
            produces=[Topic.NOTIFICATIONS],
            outbox_collections=[DELIVERIES],
            indexes=INDEXES,
        ),
    )
    notifications = Notifications(
        recipients=RecipientStore(runtime.db),
        tickets=TicketStore(runtime.db),
        templates=Catalogue(TemplateStore(runtime.db)),
        deliveries=DeliveryStore(runtime),
        channels=settings.channels(),
        policy=settings.policy(),
    )
    consumers.register(runtime, notifications)
    timers.register(runtime, notifications)
    app = create_app(
        runtime,
        title="aftersales notify",
        description="Messages to customers and staff: e-mail, SMS and group robots, with templates, "
        "preferences, do-not-disturb hours, retries and delivery status.",
        routers=[api.recipients, api.templates, api.deliveries],
    )
    app.state.notifications = notifications
    return app
