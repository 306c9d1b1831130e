"""Identifiers and time.

Ids are UUIDv7 strings: time-ordered, so keyset pagination by id is pagination by creation time,
and B-tree inserts stay at the right edge of the index.
"""

from __future__ import annotations

import os
import time


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the Unix epoch (how every timestamp is stored)."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A UUIDv7 (RFC 9562) as a 36-character string."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 66 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
