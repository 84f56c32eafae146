"""Notify service wiring: settings, the runtime, the channel adapters, consumers, timers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from datetime import time, timedelta
from typing import Annotated, Literal, Self

from fastapi import FastAPI
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from aftersales.notify import api, consumers, timers
from aftersales.notify.alerts import OnCall
from aftersales.notify.channels import ChannelAdapter
from aftersales.notify.channels.email import EmailChannel, SmtpServer
from aftersales.notify.channels.robots import dingtalk, feishu, wecom
from aftersales.notify.channels.sms import AliyunSms, SmsChannel
from aftersales.notify.channels.tencent import SmsTemplate, TencentSms, TencentSmsChannel
from aftersales.notify.domain import ChannelName, RetryPolicy, do_not_disturb
from aftersales.notify.export import NotifyExport
from aftersales.notify.fieldnotices import FieldNotices
from aftersales.notify.gateway import GatewayConfig, InboundGateway
from aftersales.notify.privacy import PersonalData
from aftersales.notify.retention import NotifyRetention
from aftersales.notify.service import Catalogue, Inbox, InboxPolicy, Notifications, NotifyPolicy
from aftersales.notify.store import (
    DELIVERIES,
    INBOUND_MAIL,
    INDEXES,
    DeliveryStore,
    InboundMailStore,
    RecipientStore,
    TemplateStore,
    TicketStore,
)
from aftersales.shared.contracts import Topic
from aftersales.shared.export import EXPORT_ANSWERS, ExportLedger
from aftersales.shared.http import create_app
from aftersales.shared.privacy import ERASURES, ContactPreferenceStore, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings

DEV_ALERTMANAGER_TOKEN = "dev-alertmanager-token"  # deploy/alertmanager/alertmanager.yml sends it


class TencentTemplate(BaseModel):
    id: str = Field(min_length=1, max_length=32, description="the approved template's id")
    params: list[str] = Field(default_factory=list, description="message parameters for {1}, {2}, ...")


class TencentSmsSettings(ServiceSettings):
    """Tencent Cloud SMS (SMS_PROVIDER=tencent)."""

    tencent_sms_endpoint: str = Field(
        default="https://sms.tencentcloudapi.com/",
        description="Tencent Cloud SMS API endpoint (API 3.0, POST)",
    )
    tencent_secret_id: str = Field(default="", description="Tencent Cloud SecretId")
    tencent_secret_key: SecretStr = Field(default=SecretStr(""), description="Tencent Cloud SecretKey")
    tencent_sms_sdk_app_id: str = Field(default="", description="the SMS application's SdkAppId")
    tencent_sms_sign_name: str = Field(default="", description="approved SMS signature (签名) name")
    tencent_sms_region: str = Field(default="ap-guangzhou", description="X-TC-Region of the requests")
    tencent_sms_templates: dict[str, TencentTemplate] = Field(
        default_factory=dict,
        description='approved template per message template, e.g. {"ticket_acknowledged": {"id": "1234", '
        '"params": ["ticket_id"]}} (JSON object; params fill {1}, {2}, ...); a message without one is '
        "not sent by SMS",
    )

    def tencent_missing(self) -> list[str]:
        """Return the settings SMS through Tencent needs that are not set."""
        return [
            name
            for name, value in (
                ("TENCENT_SECRET_ID", self.tencent_secret_id),
                ("TENCENT_SECRET_KEY", self.tencent_secret_key.get_secret_value()),
                ("TENCENT_SMS_SDK_APP_ID", self.tencent_sms_sdk_app_id),
                ("TENCENT_SMS_SIGN_NAME", self.tencent_sms_sign_name),
            )
            if not value
        ]

    def tencent(self, timeout_s: float = 10.0) -> TencentSms:
        return TencentSms(
            endpoint=self.tencent_sms_endpoint,
            secret_id=self.tencent_secret_id,
            secret_key=self.tencent_secret_key.get_secret_value(),
            sdk_app_id=self.tencent_sms_sdk_app_id,
            sign_name=self.tencent_sms_sign_name,
            templates={k: SmsTemplate(t.id, tuple(t.params)) for k, t in self.tencent_sms_templates.items()},
            region=self.tencent_sms_region,
            timeout_s=timeout_s,
        )


class RetentionSettings(ServiceSettings):
    """How long notify keeps customers' personal data (PIPL retention)."""

    retention_recipient_contact_days: float = Field(
        default=1095,
        ge=0,
        description="a customer's contact points are forgotten this many days after they were last "
        "registered (0: kept without limit)",
    )
    retention_inbound_mail_days: float = Field(
        default=1095,
        ge=0,
        description="a received mail's attachments and pending command are erased this many days after "
        "it was received (0: kept without limit)",
    )


class Settings(TencentSmsSettings, RetentionSettings):
    service_name: str = "notify"
    http_port: int = Field(default=8006, ge=1, le=65535)

    smtp_host: str = Field(default="", description="SMTP server for e-mail; empty turns e-mail off")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587 with STARTTLS)")
    smtp_sender: str = Field(default="aftersales@localhost", description="From address of the mails")
    smtp_username: str = Field(default="", description="SMTP login; empty: no authentication")
    smtp_password: SecretStr = Field(default=SecretStr(""), description="SMTP password")
    smtp_starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS")
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=60, description="give up on the SMTP server after")

    sms_provider: Literal["none", "aliyun", "tencent"] = Field(
        default="none", description="SMS provider (aliyun or tencent); none turns SMS off"
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
    alertmanager_webhook_token: SecretStr = Field(
        default=SecretStr(""),
        description="bearer token Alertmanager sends to POST /v1/alerts/alertmanager (its "
        "http_config.authorization); empty: development uses dev-alertmanager-token, other environments "
        "refuse every call",
    )
    oncall_default_rotation: str = Field(
        default="platform",
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="the on-call rotation of alerts without a `rotation` label",
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

    smtp_inbound_port: int = Field(
        default=0, ge=0, le=65535, description="port of the inbound mail gateway (SMTP); 0 turns it off"
    )
    smtp_inbound_host: str = Field(
        default="127.0.0.1", description="address the inbound mail gateway listens on (0.0.0.0: every one)"
    )
    inbound_mail_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="the mail domains the gateway takes mail for, comma-separated (others: 550); "
        "SMTP_SENDER should be an address of one of them, so customers' replies come back",
    )
    inbound_mail_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024, description="largest mail taken (552 above)"
    )
    inbound_mail_max_attachments: int = Field(
        default=10, ge=0, le=50, description="attachments kept per mail (the others are listed as refused)"
    )
    inbound_mail_attachment_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["image/", "video/", "application/pdf", "text/plain"],
        description="content types (or prefixes ending in /) of the attachments kept, comma-separated",
    )
    inbound_mail_region_code: str = Field(
        default="000000",
        pattern=r"^\d{6}(/\d{6})*$",
        description="region given to customers who write in by mail (a mail has no address): where "
        "their tickets are triaged",
    )
    inbound_mail_quiet_start: time = Field(
        default=time(21, 0),
        description="customer-local start of the quiet hours of a customer who wrote in by mail (the "
        "acknowledgement and later messages wait for their end); equal to the end: none",
    )
    inbound_mail_quiet_end: time = Field(default=time(9, 0), description="customer-local, e.g. 09:00")
    inbound_mail_timeout_s: float = Field(
        default=20.0, gt=0, le=300, description="recording a mail taking longer is refused with 451"
    )

    @field_validator("inbound_mail_domains", "inbound_mail_attachment_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _inbound_needs_domains(self) -> Self:
        if self.smtp_inbound_port and not self.inbound_mail_domains:
            raise ValueError("SMTP_INBOUND_PORT needs INBOUND_MAIL_DOMAINS (the domains to take mail for)")
        return self

    def gateway(self) -> GatewayConfig:
        """Return the inbound mail gateway's configuration."""
        return GatewayConfig(
            host=self.smtp_inbound_host,
            port=self.smtp_inbound_port,
            domains=tuple(self.inbound_mail_domains),
            max_bytes=self.inbound_mail_max_bytes,
            timeout_s=self.inbound_mail_timeout_s,
        )

    def inbox(self) -> InboxPolicy:
        """Return what the inbox keeps of a mail and how it files a new customer."""
        return InboxPolicy(
            domains=tuple(self.inbound_mail_domains),
            region_code=self.inbound_mail_region_code,
            attachment_types=tuple(self.inbound_mail_attachment_types),
            max_attachments=self.inbound_mail_max_attachments,
            sender_quiet=do_not_disturb(self.inbound_mail_quiet_start, self.inbound_mail_quiet_end),
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
        if self.sms_provider == "tencent" and self.tencent_missing():
            raise ValueError(f"SMS_PROVIDER=tencent needs {', '.join(self.tencent_missing())}")
        return self

    def alertmanager_token(self) -> str | None:
        """The bearer token Alertmanager must send; None: the webhook refuses every call."""
        token = self.alertmanager_webhook_token.get_secret_value()
        if token:
            return token
        return DEV_ALERTMANAGER_TOKEN if self.environment == "development" else None

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
        if self.sms_provider == "tencent":
            adapters[ChannelName.SMS] = TencentSmsChannel(self.tencent(self.robot_timeout_s))
        return adapters


def build(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=consumers.CONSUMES,
            produces=[Topic.NOTIFICATIONS, Topic.REQUESTS, Topic.PRIVACY],
            outbox_collections=[DELIVERIES, INBOUND_MAIL, ERASURES, EXPORT_ANSWERS],
            indexes=INDEXES,
        ),
    )
    mails = InboundMailStore(runtime)
    recipients = RecipientStore(runtime.db)
    inbox = Inbox(store=mails, policy=settings.inbox(), recipients=recipients)
    if settings.smtp_inbound_port:
        runtime.spec.extra_tasks.append(InboundGateway(inbox, settings.gateway()).serve)
    preferences = ContactPreferenceStore(runtime)
    notifications = Notifications(
        recipients=recipients,
        tickets=TicketStore(runtime.db),
        templates=Catalogue(TemplateStore(runtime.db)),
        deliveries=DeliveryStore(runtime),
        channels=settings.channels(),
        policy=settings.policy(),
        preferences=preferences,
    )
    personal_data = PersonalData(
        recipients=recipients,
        ledger=ErasureLedger(runtime, service="notify"),
        preferences=preferences,
        mails=mails,
    )
    retention = NotifyRetention(
        runtime,
        personal_data,
        contact_days=settings.retention_recipient_contact_days,
        mail_days=settings.retention_inbound_mail_days,
    )
    recipients.noted = retention.noted
    mails.noted = retention.mail_noted
    timers.register(runtime, notifications)
    export = NotifyExport(recipients=recipients, ledger=ExportLedger(runtime, service="notify"))
    consumers.register(
        runtime, notifications, personal_data, FieldNotices(notifications), export.on_export_requested, inbox
    )
    app = create_app(
        runtime,
        title="aftersales notify",
        description="Messages to customers and staff: e-mail, SMS and group robots, with templates, "
        "preferences, do-not-disturb hours, retries and delivery status.",
        routers=[api.recipients, api.templates, api.deliveries, api.inbound_mail, api.alerts],
    )
    app.state.oncall = OnCall(notifications, settings.oncall_default_rotation)
    app.state.alertmanager_token = settings.alertmanager_token()
    app.state.notifications = notifications
    app.state.inbox = inbox
    app.state.retention = retention
    return app
