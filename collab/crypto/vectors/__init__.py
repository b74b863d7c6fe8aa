"""CR1 test vectors: built only from fixed seeds, nonces and timestamps, so
the file is byte-for-byte reproducible. The JavaScript client is held to the
same bytes. Regenerate: python -m collab.crypto.vectors --write
"""

from __future__ import annotations

import json
from pathlib import Path

from .generate import build_vectors

PATH = Path(__file__).with_name("cr1.json")


def render() -> str:
    return json.dumps(build_vectors(), indent=1, sort_keys=True, ensure_ascii=True) + "\n"


__all__ = ["PATH", "build_vectors", "render"]
