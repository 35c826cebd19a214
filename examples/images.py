"""An image-style handler registered by function path (`examples.images.thumbnail`).

It does no real image work so that the example needs no imaging library: it computes the size
a thumbnail would have, the way a real handler would before resizing.
"""

from __future__ import annotations


def thumbnail(width: int, height: int, max_side: int = 256) -> dict[str, int]:
    """The size of a thumbnail that fits in a `max_side` square, keeping the aspect ratio."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive (got {width}x{height})")
    scale = min(1.0, max_side / max(width, height))
    return {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}
