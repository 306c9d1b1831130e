"""Payload encoding: typed values to JSON and back, canonical hashing, JSON Schemas.

Supported payload types are whatever msgspec handles (primitives, dicts/lists, dataclasses,
``msgspec.Struct``, ``TypedDict``, ``datetime``, ``UUID``, ``Enum`` ...) plus pydantic models when
pydantic is installed (detected by duck typing, so the SDK does not depend on it).

Example:
    >>> from dataclasses import dataclass
    >>> from aiki.worker_sdk import serde
    >>> @dataclass
    ... class Order:
    ...     sku: str
    ...     quantity: int = 1
    >>> serde.encode(Order("tea"))
    b'{"sku":"tea","quantity":1}'
    >>> serde.decode(b'{"sku": "tea", "quantity": 2}', Order)
    Order(sku='tea', quantity=2)
    >>> serde.decode(b'{"sku": "tea", "quantity": "two"}', Order)
    Traceback (most recent call last):
    ...
    aiki.worker_sdk.errors.ValidationError: Expected `int`, got `str` - at `$.quantity`
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from aiki.worker_sdk.errors import ValidationError

_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_canonical_encoder = msgspec.json.Encoder(enc_hook=_enc_hook, order="sorted")


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and callable(getattr(tp, "model_validate", None))


def field_of(message: str) -> str | None:
    """The field path named in a msgspec validation message (``$.a[0].b`` → ``a[0].b``).

    Args:
        message: A msgspec validation error's text.

    Returns:
        The path, or None when the message names none.

    Example:
        >>> from aiki.worker_sdk.serde import field_of
        >>> field_of("Expected `int`, got `str` - at `$.items[0].quantity`")
        'items[0].quantity'
        >>> field_of("Object missing required field `sku` - at `$.items[0]`")
        'items[0].sku'
    """
    path = ""
    m = _PATH.search(message)
    if m:
        path = m.group("path").lstrip(".")
    missing = _MISSING.search(message)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return path or None


def encode(value: Any) -> bytes:
    """Encode ``value`` as JSON.

    Args:
        value: Any supported payload.

    Returns:
        The JSON bytes.

    Raises:
        ValidationError: The value is not JSON-serializable.
    """
    try:
        return _encoder.encode(value)
    except (TypeError, NotImplementedError, msgspec.EncodeError, OverflowError) as e:
        raise ValidationError(f"cannot encode payload: {e}") from e


def canonical(value: Any) -> bytes:
    """Encode ``value`` as canonical JSON (object keys sorted), the basis of task addresses.

    Args:
        value: Any supported payload.

    Returns:
        The JSON bytes, the same for equal values whatever their key order.

    Example:
        >>> from aiki.worker_sdk.serde import canonical
        >>> canonical({"b": 1, "a": [2, 3]})
        b'{"a":[2,3],"b":1}'

    Raises:
        ValidationError: The value is not JSON-serializable.
    """
    try:
        return _canonical_encoder.encode(value)
    except (TypeError, NotImplementedError, msgspec.EncodeError, OverflowError) as e:
        raise ValidationError(f"cannot encode payload: {e}") from e


def task_address(name: str, canonical_input: bytes) -> str:
    """The memoization address of a task call: ``name:sha256(canonical input)[:32]``.

    Args:
        name: The task's name.
        canonical_input: The input as :func:`canonical` encodes it.

    Returns:
        The address; calls with the same name and equal inputs share it.

    Example:
        >>> from aiki.worker_sdk.serde import canonical, task_address
        >>> address = task_address("charge", canonical({"amount": 5}))
        >>> address.startswith("charge:"), len(address.split(":")[1])
        (True, 32)
    """
    return f"{name}:{hashlib.sha256(canonical_input).hexdigest()[:32]}"


def decode(raw: bytes | msgspec.Raw, tp: Any = Any) -> Any:
    """Decode JSON ``raw`` into type ``tp``.

    Args:
        raw: The JSON.
        tp: The type to decode into (``Any``: plain JSON values).

    Returns:
        The decoded value.

    Raises:
        ValidationError: The JSON does not fit ``tp``; ``field`` names the offending path.
    """
    data = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
    try:
        if _is_pydantic(tp):
            return tp.model_validate(msgspec.json.decode(data))
        return msgspec.json.decode(data, type=tp)
    except msgspec.ValidationError as e:
        raise ValidationError(str(e), field=field_of(str(e))) from e
    except msgspec.DecodeError as e:
        raise ValidationError(f"malformed JSON payload: {e}") from e
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ValidationError(str(e)) from e


def encode_checked(value: Any, tp: Any = Any) -> bytes:
    """Encode ``value`` and check that it decodes back as ``tp``.

    The client calls this before any request, so a payload that does not fit its annotation is
    refused locally and no run or event is created.

    Args:
        value: The payload.
        tp: The type it must fit (``Any``: no check).

    Returns:
        The JSON bytes.

    Raises:
        ValidationError: The value cannot be encoded or does not fit ``tp``.
    """
    raw = encode(value)
    if tp is not Any:
        decode(raw, tp)
    return raw


def json_schema(tp: Any) -> dict[str, Any] | None:
    """The JSON Schema of ``tp`` for registration, or None when ``tp`` is untyped (``Any``).

    Args:
        tp: A payload type.

    Returns:
        The schema, or None when ``tp`` is ``Any`` or has no schema.

    Example:
        >>> from typing import Any, TypedDict
        >>> from aiki import json_schema
        >>> class Point(TypedDict):
        ...     x: int
        ...     y: int
        >>> json_schema(Point)["$defs"]["Point"]["required"]
        ['x', 'y']
        >>> json_schema(Any) is None
        True
    """
    if tp is Any:
        return None
    try:
        if _is_pydantic(tp):
            schema: dict[str, Any] = tp.model_json_schema()
            return schema
        return msgspec.json.schema(tp)
    except (TypeError, ValueError):
        return None
