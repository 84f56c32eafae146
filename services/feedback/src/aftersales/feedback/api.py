"""HTTP routes: the customer's survey answer (no account: the signed token is the credential), the
privileged survey list with links, survey results, and the complaint workflow."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import BaseModel, Field

from aftersales.feedback.domain import ComplaintSource, SurveyStatus, summarize
from aftersales.feedback.service import Feedback
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState
from aftersales.shared.errors import Forbidden, NotFound
from aftersales.shared.http import Principal, anonymous, require
from aftersales.shared.settings import Scope

Supervisor = Annotated[Principal, Depends(require(Scope.SUPERVISOR))]
Opener = Annotated[Principal, Depends(require(Scope.SUPERVISOR, Scope.CHANNEL))]
ComplaintId = Annotated[str, Path(max_length=200)]
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


def _complaint(doc: dict[str, Any]) -> ComplaintRead:
    return ComplaintRead.model_validate({**doc, "id": doc["_id"]})


def surveys_router(feedback: Feedback, link_base: str) -> APIRouter:
    r = APIRouter(prefix="/v1/surveys", tags=["surveys"])

    def read(doc: dict[str, Any]) -> SurveyRead:
        out = SurveyRead.model_validate({**doc, "survey_id": doc["_id"]})
        if doc["status"] == SurveyStatus.SENT.value:
            token = feedback.token_for(doc)
            out = out.model_copy(update={"token": token, "link": f"{link_base}{token}"})
        return out

    @r.get(
        "",
        summary="Surveys with their answer links (privileged; production sends links via a gateway)",
    )
    async def list_surveys(
        _: Supervisor,
        ticket_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        status: SurveyStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> SurveyList:
        filters: dict[str, Any] = {}
        if ticket_id is not None:
            filters["ticket_id"] = ticket_id
        if status is not None:
            filters["status"] = status.value
        items = [read(d) for d in await feedback.store.find_surveys(filters, limit)]
        return SurveyList(items=items, count=len(items))

    @r.get("/results", summary="Survey results and summary (response rate, CSAT average, NPS)")
    async def results(
        _: Supervisor, ticket_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None
    ) -> SurveyResults:
        filters = {"ticket_id": ticket_id} if ticket_id else {}
        summary = summarize(
            await feedback.store.count_surveys(filters), await feedback.store.answers(filters)
        )
        surveys = [read(d) for d in await feedback.store.find_surveys(filters, 500)] if ticket_id else []
        for s in surveys:
            s.token, s.link = None, None  # results are for reading, not for answering
        return SurveyResults(
            ticket_id=ticket_id,
            summary=SurveySummaryRead(
                sent=summary.sent,
                submitted=summary.submitted,
                response_rate=summary.response_rate,
                csat_average=summary.csat_average,
                nps=summary.nps,
            ),
            surveys=surveys,
        )

    @r.post(
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
        token: Annotated[str, Path(min_length=1, max_length=1024)], body: SurveyAnswerCreate
    ) -> SurveyAnswerRead:
        done = await feedback.submit(token, body.csat, body.nps, body.comment)
        return SurveyAnswerRead(
            survey_id=done["_id"],
            ticket_id=done["ticket_id"],
            round=done["round"],
            status=SurveyStatus.SUBMITTED,
            submitted_at=done["submitted_at"],
        )

    return r


def complaints_router(feedback: Feedback) -> APIRouter:
    r = APIRouter(prefix="/v1/complaints", tags=["complaints"])

    @r.post(
        "", status_code=201, summary="Open a complaint (Idempotency-Key makes a retry return the same one)"
    )
    async def open_complaint(
        body: ComplaintCreate,
        caller: Opener,
        response: Response,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> ComplaintRead:
        if not caller.is_staff:  # a channel complains about its own tickets, and assigns nobody
            if body.owner_id is not None:
                raise Forbidden("only supervisors assign a complaint's owner", field="owner_id")
            if body.ticket_id is None:
                raise Forbidden(
                    "a channel opens complaints about its own tickets: give ticket_id", field="ticket_id"
                )
            facts = await feedback.store.ticket(body.ticket_id)
            if facts is None or facts.get("submitted_by") != f"http:{caller.subject}":
                raise NotFound(f"ticket {body.ticket_id} not found", field="ticket_id")
        if idempotency_key:
            digest = hashlib.sha256(f"{caller.subject}|{idempotency_key}".encode()).hexdigest()[:20]
            complaint_id = f"CP-api-{digest}"
        else:
            complaint_id = f"CP-{uuid.uuid4().hex[:16]}"
        complaint, created = await feedback.open_complaint(
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
        return _complaint(await feedback.store.complaint_doc(complaint.id))

    @r.get("", summary="List complaints by state, ticket, scope or source")
    async def list_complaints(
        _: Supervisor,
        state: ComplaintState | None = None,
        ticket_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        scope: ComplaintScope | None = None,
        source: ComplaintSource | None = None,
        escalated: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> ComplaintList:
        filters: dict[str, Any] = {}
        for name, value in (("state", state), ("scope", scope), ("source", source)):
            if value is not None:
                filters[name] = value.value
        if ticket_id is not None:
            filters["ticket_id"] = ticket_id
        if escalated is not None:
            filters["escalated"] = escalated
        items = [_complaint(d) for d in await feedback.store.find_complaints(filters, limit)]
        return ComplaintList(items=items, count=len(items))

    @r.get("/{complaint_id}", summary="One complaint with its history")
    async def get_complaint(complaint_id: ComplaintId, _: Supervisor) -> ComplaintRead:
        return _complaint(await feedback.store.complaint_doc(complaint_id))

    @r.post("/{complaint_id}/transition", summary="Move a complaint through its workflow (409 when illegal)")
    async def transition(
        complaint_id: ComplaintId, body: ComplaintTransition, caller: Supervisor
    ) -> ComplaintRead:
        await feedback.transition(
            complaint_id, body.to, owner_id=body.owner_id, by=caller.subject, note=body.note
        )
        return _complaint(await feedback.store.complaint_doc(complaint_id))

    return r
