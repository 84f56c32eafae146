"""HTTP routes: the customer's survey page and answer (no account: the signed token is the credential), the
privileged survey list with links, survey results, and the complaint workflow."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from aftersales.feedback import page
from aftersales.feedback.domain import ComplaintSource, SurveyStatus
from aftersales.feedback.service import Complaints, Surveys
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState
from aftersales.shared.errors import Forbidden, NotFound
from aftersales.shared.http import anonymous
from aftersales.shared.roles import ChannelOrSupervisor, Supervisor, service_of

SurveyService = Annotated[Surveys, service_of("surveys", Surveys)]
ComplaintService = Annotated[Complaints, service_of("complaints", Complaints)]
ComplaintId = Annotated[str, Path(max_length=200)]
SurveyToken = Annotated[str, Path(min_length=1, max_length=1024)]
TicketFilter = Annotated[str | None, Query(min_length=1, max_length=100)]
COMMENT_MAX_CHARS = 2000


class SurveyAnswerCreate(BaseModel):
    csat: int = Field(ge=1, le=5, description="customer satisfaction, 1 (very unhappy) to 5 (very happy)")
    nps: int | None = Field(default=None, ge=0, le=10, description="likelihood to recommend, 0-10")
    comment: str | None = Field(default=None, max_length=COMMENT_MAX_CHARS)


class SurveyAnswerRead(BaseModel):
    survey_id: str
    ticket_id: str
    round: int
    status: SurveyStatus
    submitted_at: datetime


class SurveyRead(BaseModel):
    survey_id: str
    ticket_id: str
    round: int
    technician_id: str | None = None
    status: SurveyStatus
    sent_at: datetime
    expires_at: datetime
    csat: int | None = None
    nps: int | None = None
    comment: str | None = None
    submitted_at: datetime | None = None
    token: str | None = Field(default=None, description="only while answerable; a bearer credential")
    link: str | None = None


class SurveyList(BaseModel):
    items: list[SurveyRead]
    count: int


class SurveySummaryRead(BaseModel):
    sent: int
    submitted: int
    response_rate: float | None
    csat_average: float | None
    nps: float | None = Field(description="net promoter score, -100..100")


class SurveyResults(BaseModel):
    ticket_id: str | None
    summary: SurveySummaryRead
    surveys: list[SurveyRead]


class ComplaintCreate(BaseModel):
    ticket_id: str | None = Field(default=None, min_length=1, max_length=100)
    category: Category | None = None
    product_model: str | None = Field(default=None, min_length=1, max_length=100)
    summary: str = Field(min_length=1, max_length=4000, description="what the customer complains about")
    owner_id: str | None = Field(
        default=None, min_length=1, max_length=100, description="supervisors only: who owns it"
    )


class ComplaintTransition(BaseModel):
    to: ComplaintState
    owner_id: str | None = Field(
        default=None, min_length=1, max_length=100, description="who owns the next step"
    )
    note: str | None = Field(default=None, max_length=4000)


class ComplaintHistoryRead(BaseModel):
    at: datetime
    action: str
    by: str | None = None
    note: str | None = None


class ComplaintRead(BaseModel):
    id: str
    ticket_id: str | None = None
    source: ComplaintSource
    scope: ComplaintScope
    state: ComplaintState
    category: Category | None = None
    product_model: str | None = None
    summary: str | None = None
    owner_id: str | None = None
    opened_at: datetime
    step_deadline_at: datetime | None = None
    deadline_at: datetime
    escalated: bool
    closed_at: datetime | None = None
    survey_id: str | None = None
    history: list[ComplaintHistoryRead] = []


class ComplaintList(BaseModel):
    items: list[ComplaintRead]
    count: int


surveys_router = APIRouter(prefix="/v1/surveys", tags=["surveys"])
complaints_router = APIRouter(prefix="/v1/complaints", tags=["complaints"])


def _survey(doc: dict[str, Any], surveys: Surveys, *, with_link: bool = True) -> SurveyRead:
    out = SurveyRead.model_validate({**doc, "survey_id": doc["_id"]})
    if with_link and doc["status"] == SurveyStatus.SENT.value:
        token = surveys.token_for(doc)
        out = out.model_copy(update={"token": token, "link": surveys.link_for(token)})
    return out


def _complaint(doc: dict[str, Any]) -> ComplaintRead:
    return ComplaintRead.model_validate({**doc, "id": doc["_id"]})


@surveys_router.get(
    "",
    summary="Surveys with their answer links (privileged; production sends links via a gateway)",
)
async def list_surveys(
    _: Supervisor,
    surveys: SurveyService,
    ticket_id: TicketFilter = None,
    status: SurveyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SurveyList:
    equal_to = {"ticket_id": ticket_id, "status": status.value if status is not None else None}
    items = [_survey(d, surveys) for d in await surveys.find(equal_to, limit)]
    return SurveyList(items=items, count=len(items))


@surveys_router.get("/results", summary="Survey results and summary (response rate, CSAT average, NPS)")
async def results(_: Supervisor, surveys: SurveyService, ticket_id: TicketFilter = None) -> SurveyResults:
    summary = await surveys.summary(ticket_id)
    # Results are for reading, not for answering: no tokens or links.
    found = await surveys.find({"ticket_id": ticket_id}, 500) if ticket_id else []
    return SurveyResults(
        ticket_id=ticket_id,
        summary=SurveySummaryRead.model_validate(summary, from_attributes=True),
        surveys=[_survey(d, surveys, with_link=False) for d in found],
    )


@surveys_router.get(
    "/{token}",
    dependencies=[Depends(anonymous)],
    response_class=HTMLResponse,
    summary="The survey page a customer opens from the link (HTML, zh or en); it POSTs to the same link",
    responses={
        200: {"content": {"text/html": {}}, "description": "the form"},
        403: {"content": {"text/html": {}}, "description": "page: the link is not valid"},
        409: {"content": {"text/html": {}}, "description": "page: already answered"},
        410: {"content": {"text/html": {}}, "description": "page: the link has expired"},
    },
)
async def survey_page(
    token: SurveyToken,
    surveys: SurveyService,
    lang: Annotated[
        str | None, Query(max_length=35, description="zh or en; else Accept-Language decides (default zh)")
    ] = None,
    accept_language: Annotated[str | None, Header(max_length=1000)] = None,
) -> HTMLResponse:
    state, survey = await surveys.link_state(token)
    shown = page.render(
        state,
        page.pick_language(lang, accept_language),
        ticket_id=survey["ticket_id"] if survey is not None else None,
    )
    return HTMLResponse(shown.html, status_code=shown.status, headers=dict(shown.headers))


@surveys_router.post(
    "/{token}",
    dependencies=[Depends(anonymous)],
    summary="Answer a survey (no account; the signed link is the credential)",
    responses={
        403: {"description": "forged or malformed token"},
        409: {"description": "already answered (a link works once)"},
        410: {"description": "link expired"},
    },
)
async def answer(
    token: SurveyToken,
    body: SurveyAnswerCreate,
    surveys: SurveyService,
) -> SurveyAnswerRead:
    done = await surveys.submit(token, body.csat, body.nps, body.comment)
    return SurveyAnswerRead(
        survey_id=done["_id"],
        ticket_id=done["ticket_id"],
        round=done["round"],
        status=SurveyStatus.SUBMITTED,
        submitted_at=done["submitted_at"],
    )


async def _check_channel(caller: Principal, body: ComplaintCreate, complaints: Complaints) -> None:
    """A channel complains about its own tickets, and assigns nobody."""
    if body.owner_id is not None:
        raise Forbidden("only supervisors assign a complaint's owner", field="owner_id")
    if body.ticket_id is None:
        raise Forbidden("a channel opens complaints about its own tickets: give ticket_id", field="ticket_id")
    facts = await complaints.ticket_facts(body.ticket_id)
    if facts is None or facts.get("submitted_by") != f"http:{caller.subject}":
        raise NotFound(f"ticket {body.ticket_id} not found", field="ticket_id")


@complaints_router.post(
    "", status_code=201, summary="Open a complaint (Idempotency-Key makes a retry return the same one)"
)
async def open_complaint(
    body: ComplaintCreate,
    caller: ChannelOrSupervisor,
    complaints: ComplaintService,
    response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> ComplaintRead:
    if not caller.is_staff:
        await _check_channel(caller, body, complaints)
    if idempotency_key:
        digest = hashlib.sha256(f"{caller.subject}|{idempotency_key}".encode()).hexdigest()[:20]
        complaint_id = f"CP-api-{digest}"
    else:
        complaint_id = f"CP-{uuid.uuid4().hex[:16]}"
    complaint, created = await complaints.open(
        complaint_id=complaint_id,
        source=ComplaintSource.API,
        ticket_id=body.ticket_id,
        category=body.category,
        product_model=body.product_model,
        owner_id=body.owner_id,
        summary=body.summary,
        opened_by=caller.subject,
    )
    if not created:
        response.status_code = 200
    return _complaint(await complaints.complaint(complaint.id))


@complaints_router.get("", summary="List complaints by state, ticket, scope or source")
async def list_complaints(
    _: Supervisor,
    complaints: ComplaintService,
    state: ComplaintState | None = None,
    ticket_id: TicketFilter = None,
    scope: ComplaintScope | None = None,
    source: ComplaintSource | None = None,
    escalated: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ComplaintList:
    equal_to: dict[str, str | bool | None] = {"ticket_id": ticket_id, "escalated": escalated}
    for name, value in (("state", state), ("scope", scope), ("source", source)):
        equal_to[name] = value.value if value is not None else None
    items = [_complaint(d) for d in await complaints.find(equal_to, limit)]
    return ComplaintList(items=items, count=len(items))


@complaints_router.get("/{complaint_id}", summary="One complaint with its history")
async def get_complaint(
    complaint_id: ComplaintId, _: Supervisor, complaints: ComplaintService
) -> ComplaintRead:
    return _complaint(await complaints.complaint(complaint_id))


@complaints_router.post(
    "/{complaint_id}/transition",
    summary="Move a complaint through its workflow (409 when illegal or its history is full)",
)
async def transition(
    complaint_id: ComplaintId, body: ComplaintTransition, caller: Supervisor, complaints: ComplaintService
) -> ComplaintRead:
    await complaints.transition(
        complaint_id, body.to, owner_id=body.owner_id, by=caller.subject, note=body.note
    )
    return _complaint(await complaints.complaint(complaint_id))
