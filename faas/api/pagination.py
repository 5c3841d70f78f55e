"""Opaque Marker / NextMarker tokens and page sizes shared by the List operations."""

from __future__ import annotations

import base64
import binascii

from faas.errors import InvalidParameterValueException

PAGE_LIMIT = 50


def page_size(max_items: int | None, limit: int = PAGE_LIMIT) -> int:
    return min(max_items or limit, limit)


def encode_marker(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode()


def decode_marker(marker: str | None) -> str | None:
    if not marker:
        return None
    try:
        return base64.urlsafe_b64decode(marker.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidParameterValueException("Invalid pagination marker.") from None


def marker_int(marker: str | None) -> int | None:
    position = decode_marker(marker)
    if position is None:
        return None
    try:
        return int(position)
    except ValueError:
        raise InvalidParameterValueException("Invalid pagination marker.") from None
