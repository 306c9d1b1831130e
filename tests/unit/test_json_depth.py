"""The nesting scan that runs before any JSON body is decoded (``aiki.api.json_depth``)."""

from __future__ import annotations

import json
import time

import pytest

from aiki.api.json_depth import MAX_JSON_DEPTH, exceeds_depth


def _nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    return (open_ * depth + close * depth).encode()


@pytest.mark.parametrize("depth", [0, 1, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH])
def test_nesting_up_to_the_limit_passes(depth: int) -> None:
    assert not exceeds_depth(_nested(depth))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_nesting_beyond_the_limit_is_caught(depth: int) -> None:
    assert exceeds_depth(_nested(depth))


def test_objects_and_arrays_count_alike_and_interleaved() -> None:
    obj = b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    assert exceeds_depth(obj)
    half = MAX_JSON_DEPTH // 2
    mixed = b'[{"k":' * half + b"null" + b"}]" * half  # exactly the limit
    assert not exceeds_depth(mixed)
    assert exceeds_depth(b"[" + mixed + b"]")


def test_brackets_inside_strings_nest_nothing() -> None:
    text = json.dumps({"s": "[" * 5000, "t": '\\"[[[{{{', "u": "]" * 10}).encode()
    assert not exceeds_depth(text)
    # An escaped quote does not end the string: the brackets after it are still inside.
    assert not exceeds_depth(b'["\\"' + b"[" * 1000 + b'"]')


def test_many_siblings_are_shallow() -> None:
    assert not exceeds_depth(b"[" + b"[1]," * 100_000 + b"[]]")


def test_a_megabyte_of_brackets_is_measured_quickly() -> None:
    # The scan must be cheap next to the decode it protects (it runs in C, not per byte in Python).
    body = b"[" + (b"[" * 127 + b"]" * 127 + b",") * 4000 + b"[]]"
    started = time.perf_counter()
    assert not exceeds_depth(body)
    assert exceeds_depth(b"[" * 1_000_000)
    assert time.perf_counter() - started < 1.0
