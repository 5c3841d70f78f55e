"""Identifiers made on hot paths.

Request ids look like Lambda's (random version-4 UUIDs), but come from a PRNG seeded once from the OS rather
than from `uuid.uuid4()`, which asks the kernel for 16 random bytes on every call: on a small VM that
system call costs as much as the rest of an invocation's bookkeeping. They identify; they protect nothing,
so where an id is also a secret (receipt handles, tokens) use `uuid.uuid4()` or `secrets`.
"""

from __future__ import annotations

import os
import random

_random = random.Random(os.urandom(32))
_bits = _random.getrandbits
# Version 4 (bits 76-79 = 0100) and the RFC 4122 variant (bits 62-63 = 10).
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET = (0x4000 << 64) | (0x8000 << 48)


def request_id() -> str:
    """A random UUID in its 36-character form, e.g. 'c6af9ac6-7b61-41fd-a1cc-9bd2e5c6a1e0'."""
    h = "%032x" % ((_bits(128) & _CLEAR) | _SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def reseed() -> None:
    """After a fork, so parent and child do not repeat each other's ids."""
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=reseed)
