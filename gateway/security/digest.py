"""Client keys as digests: what the config keeps instead of the plaintext.

HMAC-SHA256 under a key drawn once per process: digests are useless outside this
process (a heap dump shows no key and no offline-guessable hash), and equal keys give
equal digests within it, so a lookup is one dictionary probe.
"""

from __future__ import annotations

import hashlib
import hmac
import os

_PEPPER = os.urandom(32)


def digest(key: str) -> bytes:
    return hmac.new(_PEPPER, key.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
