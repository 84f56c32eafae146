"""Ticket search (检索): the terms (CJK bigrams, words, keyed storage), and the search route in-process:
phone typed as at a desk, e-mail, name, serial, ticket id, Chinese free text, region levels, filters on
the ticket as it is now, per-caller visibility, cursor paging, and 422 for an unknown parameter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aftersales.intake import search_store
from aftersales.intake.app import Settings, build
from aftersales.intake.search import SearchQuery, covering_tokens, matches, seal, ticket_terms, tokens
from aftersales.intake.search_store import SEARCH
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    in_process,
    work_order_assigned,
    work_order_resolved,
)

SUP, WEB, PHONE, TECH = "dev-supervisor-token", "dev-web-token", "dev-phone-token", "dev-technician-token"
KEY = b"k" * 32


# ------------------------------------------------------------------ terms (pure)


def test_cjk_text_is_cut_into_bigrams_and_latin_into_words() -> None:
    assert tokens("空调漏水 E4 code") == ["空调", "调漏", "漏水", "e4", "code"]
    assert tokens("Ｅ４ 热") == ["e4", "热"]  # full-width folded, a lone CJK character kept


def test_a_query_looks_up_the_bigrams_that_cover_its_text() -> None:
    assert covering_tokens("空调漏水 E4") == ["空调", "漏水", "e4"]
    assert covering_tokens("空调不制冷") == ["空调", "不制", "制冷"]  # the last bigram covers the tail
    assert covering_tokens("热") == ["热"]
    for text in ("空调漏水", "热水器不加热了", "E4 空调"):  # a subset of what the text is indexed by
        assert set(covering_tokens(text)) <= set(tokens(text))
    assert SearchQuery(text="空调漏水").terms() == ["x:空调", "x:漏水"]


def test_a_single_priority_category_or_channel_is_a_term_when_the_index_has_them() -> None:
    ticket = {"title": "t", "priority": "P1", "category": "installation", "channel": "web", "status": "new"}
    assert {"y:P1", "k:installation", "h:web", "o:open"} <= set(ticket_terms(ticket, None))
    query = SearchQuery(priority=frozenset({"P1"}), category=frozenset({"installation"}), channel="web")
    assert query.terms() == ["y:P1", "k:installation", "h:web"]
    assert query.terms(facets=False) == ["a:"]  # an index begun without them: checked on candidates
    assert SearchQuery(priority=frozenset({"P1", "P2"})).terms() == ["a:"]  # several: checked


def test_text_and_names_are_stored_keyed_never_readable() -> None:
    ticket = {"title": "空调漏水", "description": "", "customer_id": "C-1", "region_code": "310000/310104"}
    sealed = seal(ticket_terms(ticket, "张三"), KEY)
    assert not any("空调" in t or "张三" in t or "漏水" in t for t in sealed)
    assert "c:C-1" in sealed and "r:310104" in sealed and "r:310000" in sealed
    assert seal(SearchQuery(text="漏水").terms(), KEY)[0] in sealed


def test_a_candidate_matches_only_as_it_is_now() -> None:
    doc = {"title": "热水器不加热", "description": "", "status": "new", "priority": "P2", "customer_id": "C"}
    assert matches(SearchQuery(text="热水器"), doc)
    assert not matches(SearchQuery(text="水器热"), doc)  # the same bigrams in another order are not it
    assert not matches(SearchQuery(text="热水器", status=frozenset({"closed"})), doc)
    assert matches(SearchQuery(text="热水器", priority=frozenset({"P2", "P1"})), doc)
    assert not matches(SearchQuery(name="李"), doc, "张三")


CJK = st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x4E40), min_size=2, max_size=30)


@settings(max_examples=60, deadline=None)
@given(text=CJK, data=st.data())
def test_every_substring_of_a_ticket_finds_it(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(text) - 2))
    end = data.draw(st.integers(start + 2, len(text)))
    doc = {"title": text, "description": ""}
    query = SearchQuery(text=text[start:end])
    assert set(seal(query.terms(), KEY)) <= set(seal(ticket_terms(doc, None), KEY))
    assert matches(query, doc)


# ------------------------------------------------------------------ the route, in-process


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def submit(svc: ServiceUnderTest, token: str = WEB, **fields: Any) -> str:
    body = {
        "channel": "web" if token == WEB else "phone",
        "customer": {
            "name": fields.get("name", "王小明"),
            "phone": fields.get("phone", "+8613800138000"),
            "region_code": fields.get("region", "310000/310100/310104"),
        },
        "product": {"device_type": "air_conditioner", "serial": fields.get("serial", "AC-2024-0001")},
        "title": fields.get("title", "空调不制冷"),
        "description": fields.get("description", "室内机漏水，显示E4"),
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth(token))
    assert r.status_code == 201, r.text
    await svc.drain_outbox()  # the ticket's events reach the search indexer
    return str(r.json()["id"])


async def found(svc: ServiceUnderTest, token: str = SUP, **params: Any) -> list[str]:
    page = await search(svc, token, **params)
    return [item["id"] for item in page["items"]]


async def search(svc: ServiceUnderTest, token: str = SUP, **params: Any) -> dict[str, Any]:
    r = await svc.http.get("/v1/search/tickets", params=params, headers=svc.auth(token))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_find_by_what_a_desk_knows(intake: ServiceUnderTest) -> None:
    leak = await submit(intake)
    heater = await submit(
        intake,
        token=PHONE,
        title="热水器不加热",
        description="Water heater shows code E1",
        name="李雷",
        phone="+8613900139000",
        serial="WH-77",
        region="440000/440300/440305",
    )
    assert await found(intake, q="漏水") == [leak]
    assert await found(intake, q="e1 热水器") == [heater]
    assert await found(intake, q="热水 漏水") == []
    assert await found(intake, phone="139 0013 9000") == [heater]  # as typed at a desk, no +86
    assert await found(intake, phone="+86 138-0013-8000") == [leak]
    assert await found(intake, name="李雷") == [heater]
    assert await found(intake, serial="ac 2024 0001") == [leak]  # case, spaces and dashes do not count
    assert await found(intake, ticket_id=heater) == [heater]
    assert await found(intake, ticket_id=heater, q="漏水") == []
    assert await found(intake, region_code="440300") == [heater]  # a city finds its districts
    assert set(await found(intake, priority=["P1", "P2", "P3", "P4"])) == {leak, heater}  # filters only
    # Nothing readable in the index: its ids are keyed terms. (Random ticket ids are hex, so a short
    # digit run such as "138" can turn up in one by chance; the whole phone number cannot.)
    ids = [d["_id"] async for d in intake.runtime.db[SEARCH].find({}, {"_id": 1})]
    readable = ("漏水", "李雷", "13800138000", "13900139000")
    assert ids and not any(word in i for word in readable for i in ids)


async def test_filters_follow_the_ticket_as_it_is_now(intake: ServiceUnderTest) -> None:
    tid = await submit(intake)
    assert await found(intake, q="空调", status="new") == [tid]
    await intake.deliver(work_order_assigned(tid, grid_id="grid-7", technician_id="tech-demo"))
    assert await found(intake, q="空调", status="new") == []
    assert await found(intake, q="空调", status="assigned", grid_id="grid-7") == [tid]
    assert await found(intake, q="空调", grid_id="grid-8") == []
    assert await found(intake, q="空调", technician_id="tech-demo") == [tid]
    now = datetime.now(UTC)
    assert await found(intake, q="空调", created_from=(now - timedelta(hours=1)).isoformat()) == [tid]
    assert await found(intake, q="空调", created_from=(now + timedelta(hours=1)).isoformat()) == []


async def test_each_caller_finds_only_what_it_may_see(intake: ServiceUnderTest) -> None:
    mine = await submit(intake, token=WEB)
    theirs = await submit(intake, token=PHONE)
    assert await found(intake, token=WEB, q="空调") == [mine]
    assert await found(intake, token=PHONE, phone="13800138000") == [theirs]
    assert await found(intake, token=TECH, q="空调") == []
    await intake.deliver(work_order_assigned(theirs, technician_id="tech-demo"))
    assert await found(intake, token=TECH, q="空调") == [theirs]
    page = await search(intake, token=WEB, q="空调")
    assert "grid_id" not in page["items"][0] or page["items"][0]["grid_id"] is None


async def paged(svc: ServiceUnderTest, **params: Any) -> list[str]:
    """Every page of a search, following its cursor (10 pages at most)."""
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await search(svc, **params, **({"cursor": cursor} if cursor else {}))
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return seen


async def test_pages_newest_first_with_a_cursor(intake: ServiceUnderTest) -> None:
    ids = [await submit(intake, title=f"洗衣机故障 {i}") for i in range(5)]
    assert await paged(intake, q="洗衣机", limit=2) == list(reversed(ids))


async def test_an_edit_reindexes_the_ticket(intake: ServiceUnderTest) -> None:
    tid = await submit(intake, serial="OLD-1")
    r = await intake.http.get(f"/v1/tickets/{tid}", headers=intake.auth(SUP))
    version = r.headers.get("ETag")
    r = await intake.http.patch(
        f"/v1/tickets/{tid}",
        json={"product": {"device_type": "air_conditioner", "serial": "NEW-2"}, "reason": "wrong label"},
        headers={**intake.auth(SUP), **({"If-Match": version} if version else {})},
    )
    assert r.status_code == 200, r.text
    await intake.drain_outbox()
    assert await found(intake, serial="NEW-2") == [tid]
    assert await found(intake, serial="OLD-1") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": "x", "sort": "asc"}, "sort"),
        ({"phone": "12"}, "phone"),
        ({"phone": "not a phone"}, "phone"),
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"email": "nobody"}, "email"),
    ],
)
async def test_bad_parameters_are_a_422_naming_them(
    intake: ServiceUnderTest, params: dict[str, Any], field: str
) -> None:
    r = await intake.http.get("/v1/search/tickets", params=params, headers=intake.auth(SUP))
    assert r.status_code == 422, r.text
    assert field in r.text


async def test_a_redelivered_ticket_event_changes_nothing(intake: ServiceUnderTest) -> None:
    tid = await submit(intake)
    created = intake.published.of_type("aftersales.ticket.created.v1")[0]
    before = sorted([d["_id"] async for d in intake.runtime.db[SEARCH].find({})])
    await intake.deliver(created, copies=2)
    after = sorted([d["_id"] async for d in intake.runtime.db[SEARCH].find({})])
    assert before == after
    assert await found(intake, q="漏水") == [tid]


async def test_open_and_done_tickets_are_apart_in_the_index(intake: ServiceUnderTest) -> None:
    tid = await submit(intake)
    await intake.deliver(work_order_assigned(tid))

    async def state() -> list[str]:
        doc = await intake.runtime.db[SEARCH].find_one({"_id": f"t:{tid}"})
        assert doc is not None
        return [t for t in doc["terms"] if t.startswith("o:")]

    assert await state() == ["o:open"]
    assert await found(intake, q="空调", status=["assigned", "new"]) == [tid]
    await intake.deliver(work_order_resolved(tid))
    assert await state() == ["o:done"]
    assert await found(intake, q="空调", status="resolved") == [tid]
    assert await found(intake, q="空调", status=["new", "assigned"]) == []
    r = await intake.http.post(
        f"/v1/tickets/{tid}/reopen", json={"reason": "still leaking"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 200, r.text
    await intake.drain_outbox()
    assert await state() == ["o:open"]
    assert await found(intake, q="空调", status="reopened") == [tid]


async def test_a_resolution_read_before_the_timeline_applied_it_indexes_the_ticket_done(
    intake: ServiceUnderTest,
) -> None:
    tid = await submit(intake)
    await intake.deliver(work_order_assigned(tid))
    search = intake.app.state.search
    await search.refresh([tid], {tid: (1, datetime.now(UTC) + timedelta(seconds=5))})  # ahead of the ticket
    doc = await intake.runtime.db[SEARCH].find_one({"_id": f"t:{tid}"})
    assert doc is not None and "o:done" in doc["terms"]
    await search.refresh([tid], {tid: (1, datetime.now(UTC) - timedelta(days=1))})  # older: the ticket counts
    doc = await intake.runtime.db[SEARCH].find_one({"_id": f"t:{tid}"})
    assert doc is not None and "o:open" in doc["terms"]


async def test_a_resolution_in_the_millisecond_of_the_assignment_still_moves_the_ticket_to_done(
    intake: ServiceUnderTest,
) -> None:
    """Routing may resolve in the millisecond it assigned (BSON keeps milliseconds): a resolution read
    before the timeline applied it still counts, and the same resolution read again after a reopen
    does not undo the reopen."""
    tid = await submit(intake)
    ms = datetime.now(UTC).replace(microsecond=0) + timedelta(milliseconds=7)
    assigned_at, resolved_at = ms + timedelta(microseconds=100), ms + timedelta(microseconds=600)
    await intake.deliver(work_order_assigned(tid, occurred_at=assigned_at))
    search = intake.app.state.search

    async def state() -> list[str]:
        doc = await intake.runtime.db[SEARCH].find_one({"_id": f"t:{tid}"})
        assert doc is not None
        return [t for t in doc["terms"] if t.startswith("o:")]

    await search.refresh([tid], {tid: (1, resolved_at)})  # read before the timeline applied it
    assert await state() == ["o:done"]
    await intake.deliver(work_order_resolved(tid, occurred_at=resolved_at))
    r = await intake.http.post(
        f"/v1/tickets/{tid}/reopen", json={"reason": "still leaking"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 200, r.text
    await intake.drain_outbox()
    assert await state() == ["o:open"]
    await search.refresh([tid], {tid: (1, resolved_at)})  # the resolution read again (a redelivery)
    assert await state() == ["o:open"]
    assert await found(intake, q="空调", status="reopened") == [tid]


async def test_filters_by_priority_follow_a_correction_and_an_older_index_still_answers(
    intake: ServiceUnderTest,
) -> None:
    tid = await submit(intake)
    other = await submit(intake, token=PHONE, phone="+8613900139000")  # the same words, by phone
    priority = (await intake.http.get(f"/v1/tickets/{tid}", headers=intake.auth(SUP))).json()["priority"]
    assert priority == "P3"
    assert await found(intake, priority="P3", channel="web") == [tid]
    assert await found(intake, priority="P3", channel="phone") == [other]
    assert await found(intake, priority="P3") == [other, tid]
    r = await intake.http.patch(
        f"/v1/tickets/{tid}",
        json={"priority": "P1", "reason": "customer is a hospital"},
        headers=intake.auth(SUP),
    )
    assert r.status_code == 200, r.text
    await intake.drain_outbox()
    assert await found(intake, priority="P1") == [tid]
    assert await found(intake, priority="P3") == [other]
    assert (await search(intake, priority="P1"))["examined"] == 1  # walked its term, not every ticket
    # An index begun before priorities were terms: the filter is checked on the candidates instead.
    await intake.runtime.db[SEARCH].update_one({"_id": "seq"}, {"$unset": {"facets": ""}})
    intake.app.state.search.index._facets = False
    older = await search(intake, priority="P1")
    assert [item["id"] for item in older["items"]] == [tid] and older["examined"] == 2


async def _postings(svc: ServiceUnderTest) -> dict[str, list[str]]:
    """The index's posting blocks, `p:<term>|<block>` -> postings (a plain walk: test data only)."""
    return {
        d["_id"]: list(d.get("ids") or ())
        async for d in svc.runtime.db[SEARCH].find({})
        if str(d["_id"]).startswith("p:")
    }


async def test_postings_go_in_small_blocks_walked_newest_first(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_store, "BLOCK", 2)  # 5 tickets over 3 blocks
    ids = [await submit(intake, title=f"洗衣机故障 {i}") for i in range(5)]
    seq = await intake.runtime.db[SEARCH].find_one({"_id": "seq"})
    assert seq is not None and seq["block"] == 2
    blocks = {key.rsplit("|", 1)[1] for key in await _postings(intake)}
    assert blocks == {"0", "1", "2"}  # ordinals 1..5
    assert all(len(p) <= 2 for p in (await _postings(intake)).values())
    assert await paged(intake, q="洗衣机", limit=2) == list(reversed(ids))
    assert await found(intake, q="洗衣机", limit=20) == list(reversed(ids))


async def test_an_index_begun_with_big_blocks_keeps_them(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index whose `seq` records no block size was written in blocks of LEGACY_BLOCK: new tickets
    and changes go on in those blocks, so a change takes out the posting where it was put."""
    monkeypatch.setattr(search_store, "BLOCK", search_store.LEGACY_BLOCK)
    old = [await submit(intake) for _ in range(3)]
    await intake.runtime.db[SEARCH].update_one({"_id": "seq"}, {"$unset": {"block": ""}})
    monkeypatch.setattr(search_store, "BLOCK", 2)
    intake.app.state.search.index._block = None  # a process started on the older index
    new = [await submit(intake) for _ in range(2)]
    postings = await _postings(intake)
    assert {key.rsplit("|", 1)[1] for key in postings} == {"0"}
    assert max(len(p) for p in postings.values()) == 5
    r = await intake.http.post(
        f"/v1/tickets/{old[0]}/cancel", json={"reason": "dup"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 200, r.text
    await intake.drain_outbox()
    by_size = sorted(len(p) for p in (await _postings(intake)).values())
    assert by_size[0] == 1 and by_size[-1] == 5  # `o:done` holds the cancelled one, `o:open` the 4 others
    assert sum(len(p) == 4 for p in (await _postings(intake)).values()) == 1
    assert await found(intake, q="空调", status=["new"]) == list(reversed([*old[1:], *new]))
    assert await found(intake, q="空调", status="cancelled") == [old[0]]
