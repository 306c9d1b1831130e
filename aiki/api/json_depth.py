"""A cheap check of a JSON body's nesting depth, made before anything decodes it.

Decoders recurse once per nesting level: ``[[[[...]]]]`` a thousand deep ends in a
``RecursionError`` inside msgspec (an unauthenticated 500 with a traceback). The body's bytes are
scanned instead, counting brackets outside strings. ``bytes.count`` settles almost every body (a
body with at most :data:`MAX_JSON_DEPTH` brackets cannot nest deeper); the others are measured
exactly, every step in C: strings cut out by a regular expression, every byte but brackets deleted,
brackets mapped to +1/-1 and the running sum's maximum taken (about 40 ms for a 1 MB body of
nothing but brackets).
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

MAX_JSON_DEPTH = 128
"""The deepest nesting of arrays and objects a request body may have (docs/internals.md)."""

# A string with its escapes: brackets inside strings do not nest anything.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Openers to 1, closers to 0xff (-1 as a signed byte).
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def exceeds_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit``, counting brackets outside strings.

    Malformed JSON is not judged here (the decoder refuses it with its own message).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    signs = _STRING.sub(b"", body).translate(_SIGNS, _NOT_BRACKETS)
    return max(accumulate(array("b", signs)), default=0) > limit
