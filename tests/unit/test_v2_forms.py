"""The v2 API's form arrays: indexed, appended, nested, JSON and repeated fields."""

from __future__ import annotations

import io

import pytest
from starlette.datastructures import Headers, UploadFile

from posthorn.dialects.v2_forms import Fields, form_array, split_key
from posthorn.errors import InvalidRequest


def test_split_key() -> None:
    assert split_key("delivery_list") == ("delivery_list", [])
    assert split_key("delivery_list[0]") == ("delivery_list", ["0"])
    assert split_key("delivery_list[0][email]") == ("delivery_list", ["0", "email"])
    assert split_key("delivery_list[]") == ("delivery_list", [""])
    assert split_key("delivery_list[0") is None
    assert split_key("[0]") is None


def test_indexed_fields_come_out_in_numeric_order() -> None:
    pairs = [
        ("delivery_list[10]", "k"),
        ("delivery_list[2]", "c"),
        ("delivery_list[0]", "a"),
        ("token", "t"),
    ]
    assert form_array(pairs, "delivery_list", max_items=100) == ["a", "c", "k"]


def test_indexed_objects() -> None:
    pairs = [
        ("delivery_list[1][email]", "b@x.test"),
        ("delivery_list[0][email]", "a@x.test"),
        ("delivery_list[0][subject]", "S1"),
        ("delivery_list[1][message]", "M2"),
    ]
    assert form_array(pairs, "delivery_list", max_items=100) == [
        {"email": "a@x.test", "subject": "S1"},
        {"email": "b@x.test", "message": "M2"},
    ]


def test_appended_fields_each_start_an_element_like_php() -> None:
    pairs = [("list[]", "a"), ("list[]", "b"), ("list[]", "c")]
    assert form_array(pairs, "list", max_items=100) == ["a", "b", "c"]


def test_json_string_and_repeated_fields() -> None:
    assert form_array([("list", '["a", "b"]')], "list", max_items=10) == ["a", "b"]
    assert form_array([("list", '[{"email": "a"}]')], "list", max_items=10) == [{"email": "a"}]
    assert form_array([("list", "a"), ("list", "b"), ("list", " ")], "list", max_items=10) == [
        "a",
        "b",
    ]
    assert form_array([("other", "x")], "list", max_items=10) is None


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ([("list", "[oops")], "form_array_invalid"),
        ([("list[0][a][b]", "x")], "form_array_invalid"),
        ([("list[0]", "x"), ("list[0][email]", "y")], "form_array_invalid"),
        ([(f"list[{i}]", "x") for i in range(4)], "batch_too_large"),
        ([("list", '["a", "b", "c", "d"]')], "batch_too_large"),
    ],
)
def test_bad_arrays_are_refused(pairs: list[tuple[str, str]], code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        form_array(pairs, "list", max_items=3)
    assert caught.value.code == code


def test_fields_text_flags_and_json() -> None:
    fields = Fields.from_json(
        {"token": "t", "track_open": 0, "flag": True, "list": ["a"], "none": None}
    )
    assert fields.text("token") == "t" and fields.text("none") is None
    assert fields.flag("track_open", default=True) is False
    assert fields.flag("flag", default=False) is True
    assert fields.flag("missing", default=True) is True
    assert fields.array("list", max_items=5) == ["a"]
    with pytest.raises(InvalidRequest):
        Fields([("track_open", "maybe")]).flag("track_open", default=True)
    with pytest.raises(InvalidRequest) as caught:
        Fields([("subject", " ")]).required("subject")
    assert caught.value.code == "field_required" and caught.value.field == "subject"


def test_files_are_found_under_any_of_their_names() -> None:
    upload = UploadFile(file=io.BytesIO(b"x"), filename="a.txt", headers=Headers({}))
    fields = Fields(
        [("attachment", upload), ("attachment[1]", upload), ("attachment", ""), ("token", "t")]
    )
    assert [key for key, _ in fields.files("attachment", "attachments")] == [
        "attachment",
        "attachment[1]",
    ]
    with pytest.raises(InvalidRequest):
        Fields([("attachment", "not a file")]).files("attachment")
    with pytest.raises(InvalidRequest):
        Fields([("token", upload)]).text("token")
