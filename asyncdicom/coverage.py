"""What a retrieve request covers, and the smaller requests that ask only for what is missing.

A request interrupted by a signal, a window's close, an idle PACS or a crash has some of its
instances on disk already. Asking for the whole of it again would transfer them twice, so it is
resumed in parts: C-FINDs down the study → series → image hierarchy (PS3.4 C.4.1.2.1: single
values of the unique keys above each level) learn the instances it covers; a series with none
stored is asked for whole (SERIES level), one with some stored for its missing instances alone
(IMAGE level, lists of at most :data:`MAX_UIDS` UIDs). When the hierarchy cannot be walked (the
patient/study-only model, no Patient ID under the patient root, a C-FIND that fails, more than
:data:`MAX_INSTANCES` instances) the answer is ``None`` and the request is asked for whole; its
instances already stored are then recognised as duplicates and not written twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence

import anyio

from asyncdicom.elements import ElementSpec, parse_path
from asyncdicom.errors import NetworkError
from asyncdicom.models import Request
from asyncdicom.net.base import FindOutcome

Find = Callable[[Request], Awaitable[FindOutcome]]

MAX_UIDS = 500  # SOP Instance UIDs in one IMAGE-level retrieve: about 32 KiB of identifier
MAX_INSTANCES = 200_000  # instances one request may cover before resuming by parts is not worth it
_KEYS = ("PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")  # retrieve keys


class _Unknown(Exception):
    """The hierarchy cannot be walked: ask for the whole request."""


def _given(request: Request) -> dict[str, str]:
    """The request's retrieve keys that have values (top level only)."""
    return {
        spec.leaf.keyword: spec.value
        for spec in request.elements
        if len(spec.path) == 1 and spec.value and spec.leaf.keyword in _KEYS
    }


def _spec(keyword: str, value: str | None) -> ElementSpec:
    return ElementSpec(parse_path(keyword), value)


Keys = list[tuple[str, str | None]]


def _request(base: Request, level: str, keys: Sequence[tuple[str, str | None]]) -> Request:
    return Request(base.key, base.line, (_spec("QueryRetrieveLevel", level), *(_spec(k, v) for k, v in keys)))


async def _values(find: Find, query: Request, keyword: str) -> list[str]:
    """The distinct values of ``keyword`` in the matches of ``query``."""
    try:
        outcome = await find(query)
    except NetworkError as exc:
        raise _Unknown(str(exc)) from None
    _check(outcome)
    return list(dict.fromkeys(value for match in outcome.matches if (value := match.get(keyword, "").strip())))


def _check(outcome: FindOutcome) -> None:
    if outcome.status not in (0x0000, 0x0001, 0x0107) and not 0xB000 <= outcome.status <= 0xBFFF:
        msg = f"C-FIND status 0x{outcome.status:04X}"
        raise _Unknown(msg)


async def missing_parts(request: Request, stored: Collection[str], find: Find, model: str) -> list[Request] | None:
    """Requests for the instances ``request`` covers that are not in ``stored`` (an empty list: all
    are there), or None when that cannot be learnt."""
    given = _given(request)
    patient: Keys = [("PatientID", given["PatientID"])] if "PatientID" in given else []
    if model == "psonly" or (model == "patient" and not patient):
        return None
    try:
        if request.level == "IMAGE" and "SOPInstanceUID" in given:
            if "StudyInstanceUID" not in given or "SeriesInstanceUID" not in given:
                return None
            wanted = [uid for uid in given["SOPInstanceUID"].split("\\") if uid not in stored]
            return _image_parts(request, patient, given["StudyInstanceUID"], given["SeriesInstanceUID"], wanted)
        return await _walk(request, given, patient, stored, find)
    except _Unknown:
        return None


async def _walk(
    request: Request, given: dict[str, str], patient: Keys, stored: Collection[str], find: Find
) -> list[Request]:
    parts: list[Request] = []
    async for study, series, instances in _series(request, given, patient, find):
        wanted = [uid for uid, _ in instances if uid not in stored]
        if len(wanted) == len(instances):
            whole: Keys = [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", series)]
            parts.append(_request(request, "SERIES", whole))
        else:
            parts.extend(_image_parts(request, patient, study, series, wanted))
    return parts


async def _series(
    request: Request, given: dict[str, str], patient: Keys, find: Find, with_class: bool = False
) -> AsyncIterator[tuple[str, str, list[tuple[str, str]]]]:
    """(study, series, [(SOP Instance UID, SOP Class UID or "")]) for each series ``request``
    covers that holds instances, from C-FINDs down the hierarchy; at most :data:`MAX_INSTANCES`."""
    if "StudyInstanceUID" in given:
        studies = given["StudyInstanceUID"].split("\\")
    else:
        keys: Keys = [(k, given[k]) for k in ("PatientID", "AccessionNumber") if k in given]
        if not keys:
            msg = "no key to find the studies by"
            raise _Unknown(msg)
        studies = await _values(
            find, _request(request, "STUDY", [*keys, ("StudyInstanceUID", None)]), "StudyInstanceUID"
        )
    covered = 0
    for study in studies:
        if "SeriesInstanceUID" in given and len(studies) == 1:
            series_list = given["SeriesInstanceUID"].split("\\")
        else:
            query = _request(request, "SERIES", [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", None)])
            series_list = await _values(find, query, "SeriesInstanceUID")
        for series in series_list:
            keys = [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", series), ("SOPInstanceUID", None)]
            if with_class:
                keys.append(("SOPClassUID", None))
            instances = await _pairs(find, _request(request, "IMAGE", keys))
            covered += len(instances)
            if covered > MAX_INSTANCES:
                msg = "too many instances"
                raise _Unknown(msg)
            if instances:
                yield study, series, instances
    if not covered:  # the PACS found nothing, yet the request was worth walking: do not trust it
        msg = "the C-FINDs found no instance"
        raise _Unknown(msg)


async def _pairs(find: Find, query: Request) -> list[tuple[str, str]]:
    """(SOP Instance UID, SOP Class UID) of each distinct instance ``query`` matches."""
    try:
        outcome = await find(query)
    except NetworkError as exc:
        raise _Unknown(str(exc)) from None
    _check(outcome)
    pairs: dict[str, str] = {}
    for match in outcome.matches:
        if uid := match.get("SOPInstanceUID", "").strip():
            pairs.setdefault(uid, match.get("SOPClassUID", "").strip())
    return list(pairs.items())


async def class_parts(
    request: Request, stored: Collection[str], find: Find, model: str, room: int
) -> list[tuple[Request, tuple[str, ...]]] | None:
    """A C-GET whose SOP classes need more presentation contexts than one association offers, split
    so each part's classes fit: the classes in groups of at most ``room``, each group asked for by
    its series (whole, when all their instances are in the group and none is stored) or by
    instance lists; instances in ``stored`` are left out. None when the hierarchy cannot be walked."""
    given = _given(request)
    patient: Keys = [("PatientID", given["PatientID"])] if "PatientID" in given else []
    if model == "psonly" or (model == "patient" and not patient) or room < 1:
        return None
    try:
        found = [item async for item in _series(request, given, patient, find, with_class=True)]
    except _Unknown:
        return None
    order = list(dict.fromkeys(cls for _, _, instances in found for _, cls in instances if cls))
    groups = [tuple(order[start : start + room]) for start in range(0, len(order), room)]
    parts: list[tuple[Request, tuple[str, ...]]] = []
    for group in groups:
        members = set(group)
        for study, series, instances in found:
            inside = [uid for uid, cls in instances if cls in members]
            wanted = [uid for uid in inside if uid not in stored]
            if not wanted:
                continue
            if len(wanted) == len(instances):
                whole: Keys = [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", series)]
                parts.append((_request(request, "SERIES", whole), group))
            else:
                parts.extend((part, group) for part in _image_parts(request, patient, study, series, wanted))
    return parts


def _image_parts(request: Request, patient: Keys, study: str, series: str, wanted: list[str]) -> list[Request]:
    return [
        _request(
            request,
            "IMAGE",
            [
                *patient,
                ("StudyInstanceUID", study),
                ("SeriesInstanceUID", series),
                ("SOPInstanceUID", "\\".join(wanted[start : start + MAX_UIDS])),
            ],
        )
        for start in range(0, len(wanted), MAX_UIDS)
    ]


MAX_SERIES_ASKED = 100  # series asked one by one for their SOP classes before giving up


async def sop_classes(
    request: Request,
    find: Find,
    model: str,
    cache: dict[str, tuple[str, ...] | None],
    locks: dict[str, anyio.Lock] | None = None,
) -> tuple[str, ...] | None:
    """The SOP classes of the instances ``request`` covers (to propose them for a C-GET), or None
    when the PACS does not say. Per study: SOP Classes in Study at STUDY level, else SOPClassUID at
    IMAGE level, series by series; ``cache`` keeps each study's answer for the run, and ``locks``
    make concurrent requests for one study wait for the first one's C-FINDs."""
    locks = {} if locks is None else locks
    given = _given(request)
    patient: Keys = [("PatientID", given["PatientID"])] if "PatientID" in given else []
    if model == "patient" and not patient:
        return None
    try:
        if "StudyInstanceUID" in given:
            studies = given["StudyInstanceUID"].split("\\")
        else:
            keys: Keys = [(k, given[k]) for k in ("PatientID", "AccessionNumber") if k in given]
            if not keys:
                return None
            query = _request(request, "STUDY", [*keys, ("StudyInstanceUID", None)])
            studies = await _values(find, query, "StudyInstanceUID")
        found: list[str] = []
        for study in studies:
            async with locks.setdefault(study, anyio.Lock()):
                if study not in cache:
                    cache[study] = await _study_classes(request, find, model, patient, study)
            classes = cache[study]
            if classes is None:
                return None
            found.extend(classes)
    except _Unknown:
        return None
    return tuple(dict.fromkeys(found)) or None


async def _study_classes(request: Request, find: Find, model: str, patient: Keys, study: str) -> tuple[str, ...] | None:
    query = _request(request, "STUDY", [*patient, ("StudyInstanceUID", study), ("SOPClassesInStudy", None)])
    listed = [uid for text in await _values(find, query, "SOPClassesInStudy") for uid in text.split("\\") if uid]
    if listed:
        return tuple(dict.fromkeys(listed))
    if model == "psonly":
        return None
    query = _request(request, "SERIES", [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", None)])
    series_list = await _values(find, query, "SeriesInstanceUID")
    if not series_list or len(series_list) > MAX_SERIES_ASKED:
        return None
    classes: list[str] = []
    for series in series_list:
        keys: Keys = [
            *patient,
            ("StudyInstanceUID", study),
            ("SeriesInstanceUID", series),
            ("SOPInstanceUID", None),
            ("SOPClassUID", None),
        ]
        classes.extend(await _values(find, _request(request, "IMAGE", keys), "SOPClassUID"))
    return tuple(dict.fromkeys(classes)) or None
