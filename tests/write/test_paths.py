"""Path rendering: sanitised components, placeholders, bounded length, confinement."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncdicom.write.paths import collision_warning, confine, render, sanitize


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3", "1.2.3"),
        ("../../etc", "_.._etc"),
        ("a/b\\c", "a_b_c"),
        ("nul\x00byte", "nul_byte"),
        ("..", "NO_PatientID"),
        ("", "NO_PatientID"),
        ("   ", "NO_PatientID"),
        ("CON", "_CON"),
        ('what?<>:"|*', "what_______"),
        ("Tést^Pätient", "Tést^Pätient"),
        ("evil\u202egnp.exe", "evil_gnp.exe"),  # a right-to-left override reads the name backwards
        ("a\u2066b\u2069c\u200bd\ufeffe", "a_b_c_d_e"),  # isolates, zero-width space, BOM
        ("line\u2028sep\x85next", "line_sep_next"),
        ("\u202e", "NO_PatientID"),
        ("山田^太郎", "山田^太郎"),
    ],
)
def test_sanitize(value: str, expected: str) -> None:
    """Separators, control and reserved characters, dot names and empty values are made safe and visible."""
    assert sanitize(value, "PatientID") == expected


def test_long_values_are_bounded_and_distinct() -> None:
    """Very long values are cut to 100 bytes with a hash suffix, so two long values stay distinct."""
    a, b = sanitize("x" * 300 + "a", "K"), sanitize("x" * 300 + "b", "K")
    assert len(a.encode()) <= 100 and len(b.encode()) <= 100
    assert a != b


def test_render_uses_placeholders_for_missing_attributes() -> None:
    """Missing attributes render as NO_<Keyword>; the file name gets .dcm."""
    assert render(
        ("PatientID", "StudyInstanceUID"), "SOPInstanceUID", {"PatientID": "P1", "SOPInstanceUID": "1.2"}
    ) == (PurePosixPath("P1/NO_StudyInstanceUID/1.2.dcm"))


@given(st.lists(st.text(max_size=400), min_size=3, max_size=3))
def test_rendered_paths_never_escape_the_root(values: list[str]) -> None:
    """Whatever the attribute values, the rendered path stays below the output directory."""
    attrs = dict(zip(("PatientID", "StudyDescription", "SOPInstanceUID"), values, strict=True))
    relative = render(("PatientID", "StudyDescription"), "SOPInstanceUID", attrs)
    root = Path("/srv/out")
    target = confine(root, relative)
    assert root in target.parents
    assert all(part not in ("", ".", "..") and "/" not in part and "\x00" not in part for part in relative.parts)
    assert render(("PatientID", "StudyDescription"), "SOPInstanceUID", attrs) == relative  # deterministic


def test_confine_refuses_escape() -> None:
    """A relative path that would leave the root is refused."""
    with pytest.raises(ValueError, match="leaves the output directory"):
        confine(Path("/srv/out"), PurePosixPath("../x.dcm"))


def test_collision_warning() -> None:
    """InstanceNumber without a series-level key warns; SOPInstanceUID never does."""
    assert collision_warning(("PatientID", "StudyInstanceUID"), "InstanceNumber") is not None
    assert collision_warning(("PatientID", "SeriesInstanceUID"), "InstanceNumber") is None
    assert collision_warning(("PatientID",), "SOPInstanceUID") is None


@pytest.mark.parametrize(
    ("value", "replaced"),
    [
        ("P1", False),
        ("Müller^Jürgen", False),
        ("", False),
        ("  spaced  ", False),
        ("../../outside", True),
        ("a/b", True),
        ("a\\b", True),
        ("..", True),
        ("nul\x00", True),
        ("P\u202e1gpj.exe", True),
        ("zero\u200bwidth", True),
    ],
)
def test_cleaned_says_when_characters_are_replaced(value: str, replaced: bool) -> None:
    from asyncdicom.write.paths import cleaned

    assert cleaned(value) is replaced
