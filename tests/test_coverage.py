"""Resuming a retrieve by parts: the C-FINDs down the hierarchy and the requests they lead to."""

from __future__ import annotations

import pytest

from asyncdicom.coverage import MAX_UIDS, class_parts, missing_parts
from asyncdicom.elements import parse_element
from asyncdicom.errors import AssociationAborted
from asyncdicom.models import Request
from asyncdicom.net.base import FindOutcome

pytestmark = pytest.mark.anyio

# study 1.1: series 1.1.1 (3 instances), series 1.1.2 (2 instances)
PACS = {("1.1", "1.1.1"): ["1.1.1.1", "1.1.1.2", "1.1.1.3"], ("1.1", "1.1.2"): ["1.1.2.1", "1.1.2.2"]}


def _request(*elements: str) -> Request:
    return Request("key", 7, tuple(parse_element(e) for e in elements))


def _keys(request: Request) -> dict[str, str | None]:
    return {spec.leaf.keyword: spec.value for spec in request.elements}


class FakePacs:
    """Answers C-FINDs from :data:`PACS`, strictly by level, and remembers them."""

    def __init__(self, status: int = 0) -> None:
        self.queries: list[dict[str, str | None]] = []
        self.status = status

    async def __call__(self, query: Request) -> FindOutcome:
        keys = _keys(query)
        self.queries.append(keys)
        level = keys["QueryRetrieveLevel"]
        if level == "STUDY":
            matches = [{"StudyInstanceUID": "1.1"}] if keys.get("AccessionNumber") == "ACC1" else []
        elif level == "SERIES":
            matches = [{"SeriesInstanceUID": s} for (st, s) in PACS if st == keys["StudyInstanceUID"]]
        else:
            uids = PACS.get((str(keys["StudyInstanceUID"]), str(keys["SeriesInstanceUID"])), [])
            matches = [{"SOPInstanceUID": u} for u in uids]
        return FindOutcome(self.status, tuple(matches))


async def test_study_request_asks_for_untouched_series_whole_and_the_rest_by_instance() -> None:
    pacs = FakePacs()
    request = _request("QueryRetrieveLevel=STUDY", "AccessionNumber=ACC1")
    parts = await missing_parts(request, {"1.1.1.1", "1.1.1.3"}, pacs, "study")
    assert parts is not None
    assert [_keys(p) for p in parts] == [
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": "1.1",
            "SeriesInstanceUID": "1.1.1",
            "SOPInstanceUID": "1.1.1.2",
        },
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.1", "SeriesInstanceUID": "1.1.2"},
    ]
    assert all(p.key == "key" and p.line == 7 for p in parts)
    assert [q["QueryRetrieveLevel"] for q in pacs.queries] == ["STUDY", "SERIES", "IMAGE", "IMAGE"]


async def test_everything_stored_means_no_part() -> None:
    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    assert (
        await missing_parts(request, {"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.2.1", "1.1.2.2"}, FakePacs(), "study") == []
    )


async def test_image_level_request_needs_no_find() -> None:
    pacs = FakePacs()
    request = _request(
        "QueryRetrieveLevel=IMAGE",
        "StudyInstanceUID=1.1",
        "SeriesInstanceUID=1.1.1",
        "SOPInstanceUID=1.1.1.1\\1.1.1.2\\1.1.1.3",
    )
    parts = await missing_parts(request, {"1.1.1.2"}, pacs, "study")
    assert parts is not None and [_keys(p)["SOPInstanceUID"] for p in parts] == ["1.1.1.1\\1.1.1.3"]
    assert pacs.queries == []


async def test_patient_root_carries_the_patient_id() -> None:
    pacs = FakePacs()
    request = _request("QueryRetrieveLevel=SERIES", "PatientID=P1", "StudyInstanceUID=1.1", "SeriesInstanceUID=1.1.2")
    parts = await missing_parts(request, {"1.1.2.1"}, pacs, "patient")
    assert parts is not None and [_keys(p) for p in parts] == [
        {
            "QueryRetrieveLevel": "IMAGE",
            "PatientID": "P1",
            "StudyInstanceUID": "1.1",
            "SeriesInstanceUID": "1.1.2",
            "SOPInstanceUID": "1.1.2.2",
        }
    ]
    assert all(q["PatientID"] == "P1" for q in pacs.queries)


@pytest.mark.parametrize(
    ("request_", "model", "pacs"),
    [
        (_request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1"), "psonly", FakePacs()),
        (_request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1"), "patient", FakePacs()),  # no PatientID
        (_request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1"), "study", FakePacs(status=0xC000)),
        (_request("QueryRetrieveLevel=STUDY", "AccessionNumber=NOPE"), "study", FakePacs()),  # finds nothing
        (_request("QueryRetrieveLevel=STUDY", "StudyDescription=CT*"), "study", FakePacs()),  # no key
    ],
)
async def test_unknown_means_ask_for_the_whole_request(request_: Request, model: str, pacs: FakePacs) -> None:
    assert await missing_parts(request_, {"1.1.1.1"}, pacs, model) is None


async def test_a_failed_find_means_ask_for_the_whole_request() -> None:
    async def broken(query: Request) -> FindOutcome:
        raise AssociationAborted("gone")

    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    assert await missing_parts(request, {"1.1.1.1"}, broken, "study") is None


async def test_long_lists_are_split() -> None:
    uids = [f"1.2.{i}" for i in range(MAX_UIDS * 2 + 1)]
    request = _request(
        "QueryRetrieveLevel=IMAGE",
        "StudyInstanceUID=1.1",
        "SeriesInstanceUID=1.1.1",
        "SOPInstanceUID=" + "\\".join(uids),
    )
    parts = await missing_parts(request, {"1.2.0"}, FakePacs(), "study")
    assert parts is not None
    assert [len(str(_keys(p)["SOPInstanceUID"]).split("\\")) for p in parts] == [MAX_UIDS, MAX_UIDS]


class ClassPacs(FakePacs):
    """FakePacs that also answers SOP Classes in Study (``listed``) or SOPClassUID per instance."""

    def __init__(self, listed: bool) -> None:
        super().__init__()
        self.listed = listed

    async def __call__(self, query: Request) -> FindOutcome:
        keys = _keys(query)
        if keys["QueryRetrieveLevel"] == "STUDY" and "SOPClassesInStudy" in keys:
            self.queries.append(keys)
            text = "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.9.1.1" if self.listed else ""
            return FindOutcome(0, ({"StudyInstanceUID": "1.1", "SOPClassesInStudy": text},))
        outcome = await super().__call__(query)
        if keys["QueryRetrieveLevel"] == "IMAGE":
            classes = {"1.1.1": "1.2.840.10008.5.1.4.1.1.2", "1.1.2": "1.2.840.10008.5.1.4.1.1.9.1.1"}
            series = str(keys["SeriesInstanceUID"])
            matches = tuple({**m, "SOPClassUID": classes[series]} for m in outcome.matches)
            return FindOutcome(0, matches)
        return outcome


@pytest.mark.parametrize("listed", [True, False])
async def test_sop_classes_from_the_study_or_its_instances(listed: bool) -> None:
    from asyncdicom.coverage import sop_classes

    pacs, cache = ClassPacs(listed), {}
    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    found = await sop_classes(request, pacs, "study", cache)
    assert found == ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.9.1.1")
    asked = len(pacs.queries)
    assert asked == (1 if listed else 4)  # STUDY; or STUDY, SERIES and one IMAGE query per series
    assert await sop_classes(request, pacs, "study", cache) == found
    assert len(pacs.queries) == asked  # cached per study


async def test_concurrent_requests_of_one_study_ask_once() -> None:
    import anyio

    from asyncdicom.coverage import sop_classes

    pacs, cache, locks = ClassPacs(False), {}, {}
    request = _request("QueryRetrieveLevel=SERIES", "StudyInstanceUID=1.1", "SeriesInstanceUID=1.1.1")
    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(sop_classes, request, pacs, "study", cache, locks)
    assert len(pacs.queries) == 4


async def test_a_pacs_that_names_no_class_means_the_fixed_proposal() -> None:
    from asyncdicom.coverage import sop_classes

    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    assert await sop_classes(request, FakePacs(status=0xC000), "study", {}) is None


async def test_a_hostile_count_of_instances_means_ask_for_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """More instances than MAX_INSTANCES: resuming by parts is given up, nothing more is asked."""
    import asyncdicom.coverage as coverage

    monkeypatch.setattr(coverage, "MAX_INSTANCES", 2)
    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    pacs = FakePacs()
    assert await missing_parts(request, {"1.1.1.1"}, pacs, "study") is None
    assert [q["QueryRetrieveLevel"] for q in pacs.queries] == ["SERIES", "IMAGE"]


async def test_too_many_series_to_ask_means_the_fixed_proposal(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncdicom.coverage as coverage

    monkeypatch.setattr(coverage, "MAX_SERIES_ASKED", 1)
    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    pacs = ClassPacs(listed=False)
    assert await coverage.sop_classes(request, pacs, "study", {}) is None
    assert [q["QueryRetrieveLevel"] for q in pacs.queries] == ["STUDY", "SERIES"]  # no IMAGE query


def test_a_hostile_list_of_classes_fits_one_association() -> None:
    from asyncdicom.net.storage import MAX_CONTEXTS, QUERY_CONTEXTS, learned_contexts

    classes = [f"1.2.3.{n}" for n in range(1000)]  # what 64 KiB of SOP Classes in Study can hold
    contexts = learned_contexts(classes)
    assert len(contexts) == MAX_CONTEXTS - QUERY_CONTEXTS


class ClassedPacs(FakePacs):
    """:data:`PACS` with a SOP class per instance: the last digit of its UID names its class."""

    async def __call__(self, query: Request) -> FindOutcome:
        outcome = await super().__call__(query)
        if _keys(query)["QueryRetrieveLevel"] != "IMAGE":
            return outcome
        return FindOutcome(0, tuple({**m, "SOPClassUID": f"9.{m['SOPInstanceUID'][-1]}"} for m in outcome.matches))


async def test_classes_beyond_one_association_split_into_parts_that_fit() -> None:
    """Classes 9.1, 9.2, 9.3 with room for two: series 1.1.2 (9.1, 9.2) fits whole in the first
    group; series 1.1.1 is asked for by instances in each group; what is stored is left out."""
    request = _request("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.1")
    parts = await class_parts(request, {"1.1.1.1"}, ClassedPacs(), "study", room=2)
    assert parts is not None
    assert [(_keys(p)["QueryRetrieveLevel"], _keys(p).get("SOPInstanceUID"), c) for p, c in parts] == [
        ("IMAGE", "1.1.1.2", ("9.1", "9.2")),
        ("SERIES", None, ("9.1", "9.2")),
        ("IMAGE", "1.1.1.3", ("9.3",)),
    ]
    assert await class_parts(request, set(), ClassedPacs(), "psonly", room=2) is None
    assert await class_parts(request, set(), ClassedPacs(status=0xC000), "study", room=2) is None
