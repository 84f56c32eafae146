"""The survey page a customer opens from the mailed link: one self-contained HTML document (inline CSS and
script, no external assets) in Chinese or English, rendered by Jinja2 with autoescaping, and the strict
Content-Security-Policy that lets only its own nonce-tagged style and script run. Pure: no I/O here."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import jinja2

from aftersales.feedback.domain import LinkState


class Language(StrEnum):
    ZH = "zh"
    EN = "en"


DEFAULT_LANGUAGE = Language.ZH

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("aftersales.feedback", "templates"),
    autoescape=True,  # every value is escaped, whatever the file name says
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATE = _ENV.get_template("survey_page.html")

# The HTTP status of each page: what POST answers for the same link, so a client sees one story.
STATUS: Mapping[LinkState, int] = MappingProxyType(
    {LinkState.OPEN: 200, LinkState.ANSWERED: 409, LinkState.EXPIRED: 410, LinkState.INVALID: 403}
)

TEXTS: Mapping[Language, Mapping[str, str]] = MappingProxyType(
    {
        Language.ZH: MappingProxyType(
            {
                "html_lang": "zh-CN",
                "title": "服务满意度调查",
                "ticket": "工单号",
                "intro": "您的服务请求已处理完毕，请花一分钟为我们的服务打分。",
                "csat": "您对本次服务满意吗？",
                "csat_low": "非常不满意",
                "csat_high": "非常满意",
                "star": "星",
                "nps": "您有多大可能向亲友推荐我们？",
                "nps_low": "0 = 完全不可能",
                "nps_high": "10 = 非常可能",
                "comment": "其他意见（选填）",
                "submit": "提交",
                "sending": "正在提交…",
                "need_csat": "请先选择满意度星级。",
                "error": "提交失败，请稍后再试。",
                "open_heading": "服务满意度调查",
                "done_heading": "感谢您的反馈！",
                "done_body": "您的评价已提交，我们会认真阅读每一条意见。",
                "answered_heading": "该问卷已提交过",
                "answered_body": "每个链接只能提交一次。感谢您的参与！",
                "expired_heading": "链接已过期",
                "expired_body": "该问卷已超过有效期，无法再提交。",
                "invalid_heading": "链接无效",
                "invalid_body": "请检查链接是否完整，或直接打开短信或邮件中的原始链接。",
                "other_language": "English",
            }
        ),
        Language.EN: MappingProxyType(
            {
                "html_lang": "en",
                "title": "Service satisfaction survey",
                "ticket": "Ticket",
                "intro": "Your service request has been resolved. Please take a minute to rate our service.",
                "csat": "How satisfied are you with the service?",
                "csat_low": "Very unhappy",
                "csat_high": "Very happy",
                "star": "stars",
                "nps": "How likely are you to recommend us to a friend?",
                "nps_low": "0 = not at all likely",
                "nps_high": "10 = extremely likely",
                "comment": "Anything else you would like to tell us? (optional)",
                "submit": "Submit",
                "sending": "Sending…",
                "need_csat": "Please choose a star rating first.",
                "error": "Something went wrong. Please try again later.",
                "open_heading": "Service satisfaction survey",
                "done_heading": "Thank you for your feedback!",
                "done_body": "Your answer has been recorded. We read every comment.",
                "answered_heading": "This survey has already been answered",
                "answered_body": "Each link can be used once. Thank you for taking part!",
                "expired_heading": "This link has expired",
                "expired_body": "The survey is past its deadline and can no longer be answered.",
                "invalid_heading": "This link is not valid",
                "invalid_body": "Please check that the link is complete, or open the original link "
                "from your text message or e-mail.",
                "other_language": "中文",
            }
        ),
    }
)


@dataclass(frozen=True, slots=True)
class SurveyPage:
    status: int
    html: str
    headers: Mapping[str, str]


def pick_language(requested: str | None, accept_language: str | None) -> Language:
    """Return `?lang=` when it names a language we have, else the best of Accept-Language, else zh."""
    for tag in [requested or "", *_by_preference(accept_language or "")]:
        primary = tag.strip().split("-")[0].split("_")[0].lower()
        if primary in Language._value2member_map_:
            return Language(primary)
    return DEFAULT_LANGUAGE


def _by_preference(header: str) -> list[str]:
    """Return the language tags of an Accept-Language header, most preferred first (q=0 left out)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):  # a header of hundreds of tags is not a customer
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag and q > 0:
            weighted.append((-q, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def render(state: LinkState, language: Language, *, ticket_id: str | None = None) -> SurveyPage:
    """Return the page of a survey link in `state`, with the headers that make it safe to show."""
    nonce = secrets.token_urlsafe(18)
    html = _TEMPLATE.render(
        state=state.value,
        t=TEXTS[language],
        ticket_id=ticket_id,
        other_language=Language.EN if language == Language.ZH else Language.ZH,
        nonce=nonce,
        csat_values=range(5, 0, -1),  # drawn right to left so CSS can light every star below the chosen
        nps_values=range(11),
    )
    return SurveyPage(STATUS[state], html, security_headers(nonce))


def security_headers(nonce: str) -> dict[str, str]:
    """Return the response headers of a survey page: only its own nonce-tagged style and script run, it
    talks only to this origin, and the link (a bearer credential) is neither cached nor sent on as a
    referrer."""
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "connect-src 'self'",
            "img-src 'none'",
            "form-action 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Vary": "Accept-Language",
    }
