"""safetensors files: model weights, never an optimizer state; detected, never loaded.

A safetensors file is an 8-byte little-endian header length, then that many bytes of JSON (an
object, so ``{``), then the tensor data. The length and the first JSON byte decide it.
"""
from __future__ import annotations

import struct
from pathlib import Path

MAX_HEADER = 100 * 1024 * 1024  # the library's own cap on the JSON header


def detect_head(head: bytes, size: int) -> bool:
    """``head`` (the file's first bytes, at least 9 of them) opens a safetensors file of
    ``size`` bytes."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= min(MAX_HEADER, size - 8) and head[8:9] == b"{"


def detect(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        return detect_head(head, Path(path).stat().st_size)
    except OSError:
        return False
