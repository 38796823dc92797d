"""The specification's worked examples (§12) and Java behaviours the hashes depend on."""

from __future__ import annotations

import math

import pytest

from asyncdicom.anonymize import dates, hashing, java


@pytest.mark.parametrize(
    ("prefix", "uid", "expected"),
    [
        (
            "1.2.840.113654.2.70.1",
            "1.2.840.113619.2.55.3.604688119.868.1234567890.123",
            "1.2.840.113654.2.70.1.82564962476139398367819456866462410307",
        ),
        ("9", "1.2.3.4.5.6.7.8.9", "9.130989519914209215576656073237581043187"),
        (
            "1.2.826.0.1.3680043.10.543.12345678901",
            "1.2.3",
            "1.2.826.0.1.3680043.10.543.12345678901.2351531745570246982654169",
        ),
    ],
)
def test_hash_uid_examples(prefix: str, uid: str, expected: str) -> None:
    """§12 rows 1–3, including the 64-character truncation."""
    assert hashing.hash_uid(prefix, uid) == expected
    assert len(hashing.hash_uid(prefix, uid)) <= 64


@pytest.mark.parametrize(
    ("text", "maxlen", "expected"),
    [
        ("12345", 10, "1734476027"),
        ("A123", 16, "2602106057595449"),
        ("[1]12345", 0, "305277255045083278874059798461368005173"),
        ("", 4, "2819"),
        ("Müller", 0, "302211161555340457334206795081280877087"),
    ],
)
def test_hash_examples(text: str, maxlen: int, expected: str) -> None:
    """§12 rows 4, 5, 7, 10 and 11 (non-ASCII text is hashed as UTF-8)."""
    assert hashing.hash_text(text, maxlen) == expected


@pytest.mark.parametrize(
    ("date", "days", "expected"),
    [
        ("20200115", -615, "20180510"),
        ("19700101", -2447, "19630421"),
        ("2020-01-15", -3210, "2011-04-02"),
        ("20200101120000-0500", 1, "2020-01-020000-0500"),  # the "iso" quirk of a negative offset
        ("20200230", 0, "20200301"),  # lenient calendar
    ],
)
def test_increment_date(date: str, days: int, expected: str) -> None:
    """§12 rows 8, 9, 19 and §8.3's leniency and format rules."""
    assert dates.increment(date, days) == expected


def test_modify_date_keeps_starred_fields_and_rolls_over() -> None:
    assert dates.modify("20200715", -1, 1, 1) == "20200101"
    assert dates.modify("20200215", -1, -1, 31) == "20200302"
    assert dates.modify("20201215", -1, 13, -1) == "20210115"


def test_hashdate_shift_rule() -> None:
    """§12 row 8: the last four digits of usmd5(PatientID) mod 3650 give the shift back."""
    digits = hashing.usmd5("12345")
    assert int(digits[-4:]) % 3650 == 615


def test_java_string_semantics() -> None:
    assert java.trim("\x00 a b \x1f") == "a b"
    assert java.split("A\\B\\\\", "\\") == ["A", "B"]
    assert java.split("\\", "\\") == []
    assert java.round_float(5.4) == 5 and java.round_float(-2.5) == -2 and java.round_float(2.5) == 3
    assert java.round_float(math.nan) == 0 and java.round_float(math.inf) == 2**31 - 1
    assert java.divide_float(12.0, 0.0) == math.inf and math.isnan(java.divide_float(0.0, 0.0))
    assert java.int32(2**31 - 1 + 1) == -(2**31) and java.float32(0.1) != 0.1
    assert java.string_hash("hello") == 99162322 and java.string_hash("𝄞") == (31 * 0xD834 + 0xDD1E)
    keys = [f"set.[{n:04X},0010]" for n in range(40)]
    assert sorted(java.properties_order(keys)) == sorted(keys) and java.properties_order(keys) != keys
    assert java.parse_int("+12") == 12
    with pytest.raises(ValueError):
        java.parse_int(" 12")
    assert java.utf16_len("𝄞a") == 3


@pytest.mark.parametrize(
    ("value", "single", "expected"),
    [
        (1.0, True, "1.0"),
        (1e-5, True, "1.0E-5"),
        (0.1, False, "0.1"),
        (12345678.0, False, "1.2345678E7"),
        (-0.001, False, "-0.001"),
    ],
)
def test_java_number_to_string(value: float, single: bool, expected: str) -> None:
    assert (java.float_to_string(value) if single else java.double_to_string(value)) == expected


def test_java_regex_translation() -> None:
    assert java.regex(r"\p{Alpha}+\d*").fullmatch("abc12")
    assert not java.regex(r"\d").fullmatch("٣")  # Java's \d is ASCII
    assert java.regex("a++b").fullmatch("aab")

    assert java.replace_all(java.regex(r"(\w+)-(\w+)"), "$2/$1", "ab-cd") == "cd/ab"
    assert java.replace_all(java.regex(r"(\d)"), "$12\\$", "a1") == "a12$"  # group 1, then "2"
    assert java.replace_all(java.regex(r"\d+"), "$1", "no digits") == "no digits"  # read per match
    with pytest.raises(IndexError):
        java.replace_all(java.regex(r"\d+"), "$1", "a1")


def test_encrypt_key_and_round_trip() -> None:
    """§12 row 12: the key text is filled to 22 chars and Base64-decoded to 16 bytes."""
    from asyncdicom.anonymize import crypto

    assert crypto.key_bytes(" mysecret ").hex() == "9b2b1e72b7adb6ccf28a19e7a6197279"
    assert crypto.encrypt("12345", "mysecret") == "HHdAc/9IgN8="
    assert crypto.decrypt(crypto.encrypt("Müller", "k-e-y!"), "k-e-y!") == "Müller"
    with pytest.raises(ValueError):
        crypto.decrypt("not base64!", "mysecret")
