"""Gallery thumbnails: PNG card pictures sent as base64, checked by hand and kept in the store.

Nothing here decodes the image: the service checks the PNG signature, that the first chunk is a well-formed
IHDR (length 13, valid CRC, width and height within the limits, a legal bit depth / colour type pair, the only
compression, filter and interlace methods PNG defines) and that the data ends with the IEND chunk. That is
enough to refuse what is not a PNG, and the browser that shows the picture does the decoding in its own sandbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import FieldErrors, NotFound
from .models import GalleryEntry, GalleryThumbnail, utcnow
from .settings import Settings

SIGNATURE = b"\x89PNG\r\n\x1a\n"
IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type IEND, its (constant) CRC
DATA_URL = "data:image/png;base64,"
# PNG spec, table 11.1: the bit depths each colour type allows.
BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


@dataclass(frozen=True)
class Png:
    """A checked PNG: its bytes and what its IHDR says."""

    data: bytes
    width: int
    height: int

    @property
    def sha256(self) -> str:
        """Return the hex sha256 of the bytes (the ETag is made from it)."""
        return hashlib.sha256(self.data).hexdigest()


def _refuse(loc: str, msg: str) -> FieldErrors:
    return FieldErrors([{"loc": loc, "msg": msg, "type": "thumbnail"}], f"thumbnail refused: {loc}: {msg}")


def decode_base64(text: str, loc: str) -> bytes:
    """Return the bytes of base64 `text` (a bare string or a data:image/png;base64, URL); 422 at `loc` when it is not base64.

    Whitespace is ignored, so the line-wrapped output of the `base64` command works as it is.
    """
    text = "".join(text.split())
    if text.startswith("data:"):
        if not text.startswith(DATA_URL):
            raise _refuse(loc, f"a data URL must start with {DATA_URL!r} (a PNG); got {text[:30]!r}")
        text = text[len(DATA_URL) :]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse(loc, "is not valid base64 (standard alphabet, padded)") from None


def check_png(data: bytes, settings: Settings, loc: str = "thumbnail") -> Png:
    """Return the checked PNG, or raise 422 at `loc` saying what is wrong (signature, IHDR, size, dimensions, truncation)."""
    limit = settings.max_thumbnail_bytes
    if len(data) > limit:
        raise _refuse(loc, f"{len(data)} bytes exceeds this server's limit of {limit} bytes (setting LMC_MAX_THUMBNAIL_BYTES)")
    if not data.startswith(SIGNATURE):
        raise _refuse(loc, "is not a PNG: the file does not start with the PNG signature (89 50 4E 47 0D 0A 1A 0A)")
    header = data[8 : 8 + 25]  # length (4) + "IHDR" (4) + 13 bytes of fields + CRC (4)
    if len(header) < 25:
        raise _refuse(loc, "is truncated: no complete IHDR chunk after the signature")
    length, kind = struct.unpack(">I4s", header[:8])
    if kind != b"IHDR" or length != 13:
        raise _refuse(loc, f"is not a valid PNG: the first chunk must be IHDR of 13 bytes, found {kind!r} of {length}")
    fields, crc = header[8:21], struct.unpack(">I", header[21:25])[0]
    if zlib.crc32(header[4:21]) != crc:
        raise _refuse(loc, "is damaged: the IHDR chunk's CRC does not match")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", fields)
    if width == 0 or height == 0:
        raise _refuse(loc, f"has an empty image ({width}x{height} pixels)")
    side = settings.max_thumbnail_side
    if width > side or height > side:
        raise _refuse(loc, f"is {width}x{height} pixels; this server allows at most {side} a side (setting LMC_MAX_THUMBNAIL_SIDE)")
    if depth not in BIT_DEPTHS.get(colour, ()):
        raise _refuse(loc, f"is not a valid PNG: colour type {colour} with bit depth {depth}")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise _refuse(loc, "is not a valid PNG: unknown compression, filter or interlace method in IHDR")
    if not data.endswith(IEND):
        raise _refuse(loc, "is truncated: it does not end with the IEND chunk")
    return Png(data, width, height)


def from_base64(text: str, settings: Settings, loc: str) -> Png:
    """Return the checked PNG behind base64 `text` (422 at `loc` otherwise)."""
    return check_png(decode_base64(text, loc), settings, loc)


def put(session: Session, entry: GalleryEntry, png: Png) -> GalleryThumbnail:
    """Store `png` as the entry's thumbnail, replacing any, and mark the entry changed (committed)."""
    row = session.get(GalleryThumbnail, entry.id)
    if row is None:
        row = GalleryThumbnail(entry_id=entry.id)
        session.add(row)
    row.png, row.width, row.height, row.bytes, row.sha256 = png.data, png.width, png.height, len(png.data), png.sha256
    row.created_at = utcnow()
    entry.updated_at = utcnow()  # caches keyed on the entry's update time (the dashboard's) see the new picture
    session.commit()
    return row


def remove(session: Session, entry: GalleryEntry) -> bool:
    """Delete the entry's thumbnail (committed); return whether there was one."""
    row = session.get(GalleryThumbnail, entry.id)
    if row is None:
        return False
    session.delete(row)
    entry.updated_at = utcnow()
    session.commit()
    return True


def get(session: Session, entry_id: str) -> GalleryThumbnail:
    """Return the entry's thumbnail; 404 saying the card falls back to a drawn preview when there is none."""
    row = session.get(GalleryThumbnail, entry_id)
    if row is None:
        raise NotFound(
            f"gallery entry {entry_id!r} has no thumbnail (send one with PUT /api/gallery/{entry_id}/thumbnail); "
            "cards show a preview drawn from the figure's data instead"
        )
    return row


def meta(session: Session, entry_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Return {entry id: ThumbnailOut fields} for the entries that have a thumbnail (the bytes are not loaded)."""
    if not entry_ids:
        return {}
    rows = session.execute(
        select(
            GalleryThumbnail.entry_id, GalleryThumbnail.width, GalleryThumbnail.height, GalleryThumbnail.bytes, GalleryThumbnail.sha256
        ).where(GalleryThumbnail.entry_id.in_(entry_ids))
    ).all()
    return {
        r.entry_id: {
            "url": f"/api/gallery/{r.entry_id}/thumbnail.png",
            "width": r.width,
            "height": r.height,
            "bytes": r.bytes,
            "etag": f'"{r.sha256[:32]}"',
        }
        for r in rows
    }


def etag(row: GalleryThumbnail) -> str:
    """Return the thumbnail's ETag header value (quoted)."""
    return f'"{row.sha256[:32]}"'
