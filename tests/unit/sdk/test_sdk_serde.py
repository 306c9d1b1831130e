from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass
from typing import Any, TypedDict

import msgspec
import pytest

from aiki.worker_sdk import ValidationError, json_schema
from aiki.worker_sdk.serde import canonical, decode, encode, encode_checked, field_of, task_address


@dataclass
class TrialInput:
    user_id: str
    seats: int = 1


class Item(msgspec.Struct):
    sku: str
    qty: int


class Order(TypedDict):
    id: str
    items: list[Item]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_canonical_json_is_stable_across_key_order() -> None:
    a = {"b": 1, "a": {"d": 2, "c": [3, {"z": 1, "y": 2}]}}
    b = {"a": {"c": [3, {"y": 2, "z": 1}], "d": 2}, "b": 1}
    assert canonical(a) == canonical(b) == b'{"a":{"c":[3,{"y":2,"z":1}],"d":2},"b":1}'
    assert task_address("t", canonical(a)) == task_address("t", canonical(b))


def test_address_format() -> None:
    address = task_address("activate-trial", canonical("user-1"))
    name, digest = address.split(":")
    assert name == "activate-trial"
    assert len(digest) == 32
    assert address != task_address("activate-trial", canonical("user-2"))


def test_dataclass_and_struct_input_hash_like_dicts() -> None:
    assert canonical(TrialInput("u", 2)) == canonical({"user_id": "u", "seats": 2})


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        (TrialInput("u", 3), TrialInput),
        (Item("s", 2), Item),
        ({"id": "o", "items": [Item("a", 1)]}, Order),
        (dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC), dt.datetime),
        (uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID),
        (Color.BLUE, Color),
        ([1, 2, 3], list[int]),
        ({"k": [1.5]}, dict[str, list[float]]),
        (None, None),
        ("x", str),
    ],
)
def test_round_trip(value: Any, tp: Any) -> None:
    assert decode(encode_checked(value, tp), tp) == value


def test_decode_accepts_raw() -> None:
    assert decode(msgspec.Raw(b'{"user_id":"u"}'), TrialInput) == TrialInput("u")


def test_validation_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        encode_checked({"user_id": 3}, TrialInput)
    assert info.value.field == "user_id"
    assert "$.user_id" in str(info.value)
    assert info.value.code == "validation_error"


def test_validation_error_nested_and_missing() -> None:
    with pytest.raises(ValidationError) as info:
        decode(b'{"id":"o","items":[{"sku":"a","qty":"x"}]}', Order)
    assert info.value.field == "items[0].qty"
    with pytest.raises(ValidationError) as info:
        decode(b"{}", TrialInput)
    assert info.value.field == "user_id"


def test_unencodable_value_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        encode(object())


def test_field_of() -> None:
    assert field_of("Expected `str`, got `int` - at `$.a[0].b`") == "a[0].b"
    assert field_of("Object missing required field `x` - at `$.a`") == "a.x"
    assert field_of("Expected `int`, got `str`") is None


def test_json_schema() -> None:
    assert json_schema(Any) is None
    schema = json_schema(TrialInput)
    assert schema is not None
    assert schema["$defs"]["TrialInput"]["required"] == ["user_id"]
    assert json_schema(str) == {"type": "string"}
