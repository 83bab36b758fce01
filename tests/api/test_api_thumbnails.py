"""Gallery thumbnails: PNGs checked by signature, IHDR and size, stored with the entry, served with an ETag; scripts upload later."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 480, height: int = 320, *, depth: int = 8, colour: int = 2) -> bytes:
    """Return a real PNG (a white RGB image) built by hand, as any encoder would lay it out."""
    rows = b"".join(b"\x00" + b"\xff" * (width * 3) for _ in range(height))
    return (
        SIGNATURE
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


def b64(data: bytes, data_url: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return "data:image/png;base64," + text if data_url else text


@pytest.fixture
def study(api) -> dict:
    return api.create({"preset": "smoke"})


def _publish(api, study: dict, **extra):
    return api.post("/api/gallery", {"study_id": study["id"], "figure": "sparsity", "title": "barriers", **extra})


def test_publish_with_a_thumbnail_and_serve_it_with_an_etag(api, study):
    picture = png()
    r = _publish(api, study, thumbnail=b64(picture, data_url=True))  # what Plotly.toImage hands the browser
    assert r.status_code == 201, r.text
    entry = r.json()
    thumb = entry["thumbnail"]
    assert (thumb["width"], thumb["height"], thumb["bytes"], thumb["url"]) == (
        480,
        320,
        len(picture),
        f"/api/gallery/{entry['id']}/thumbnail.png",
    )
    got = api.get(thumb["url"])
    assert got.status_code == 200 and got.content == picture and got.headers["content-type"] == "image/png"
    assert got.headers["etag"] == thumb["etag"] and "no-cache" in got.headers["cache-control"]
    assert got.headers["x-content-type-options"] == "nosniff"  # uploaded bytes are never sniffed into HTML or script
    again = api.client.get(thumb["url"], headers={"If-None-Match": got.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert api.get("/api/gallery").json()["data"][0]["thumbnail"] == thumb  # listings say which cards have a picture

    plain = _publish(api, study).json()
    assert plain["thumbnail"] is None
    r = api.get(f"/api/gallery/{plain['id']}/thumbnail.png")
    assert r.status_code == 404 and "PUT /api/gallery" in r.json()["detail"]
    assert api.get("/api/gallery/nope/thumbnail.png").status_code == 404


@pytest.mark.parametrize(
    "bad, words",
    [
        ("not base64!", "not valid base64"),
        ("data:image/jpeg;base64,/9j/4AAQ", "data:image/png;base64,"),
        (b64(b"\xff\xd8\xff\xe0" + bytes(100)), "PNG signature"),  # a JPEG
        (b64(SIGNATURE + b"\x00\x00"), "truncated"),
        (b64(png()[:-12]), "IEND"),  # cut before its end
        (b64(png()[:29] + b"\x00" + png()[30:]), "CRC"),  # one IHDR byte flipped
        (b64(SIGNATURE + _chunk(b"IDAT", b"x" * 13) + _chunk(b"IEND", b"")), "first chunk must be IHDR"),
        (b64(png(4, 4, depth=3, colour=2)), "bit depth"),
        (b64(png(0, 4)), "empty image"),
    ],
)
def test_what_is_not_a_sane_png_is_refused_and_nothing_is_written(api, study, bad, words):
    r = _publish(api, study, thumbnail=bad)
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == ["thumbnail"] and words in r.json()["message"]
    assert api.get("/api/gallery").json()["count"] == 0


def test_limits_name_their_settings(make_app):
    api = make_app(max_thumbnail_bytes=2000, max_thumbnail_side=100)
    study = api.create({"preset": "smoke"})
    big = png(90, 90)
    big = big[:-12] + _chunk(b"tEXt", b"Comment\x00" + b"x" * 2000) + big[-12:]
    r = _publish(api, study, thumbnail=b64(big))
    assert r.status_code == 422 and "LMC_MAX_THUMBNAIL_BYTES" in r.json()["message"]
    r = _publish(api, study, thumbnail=b64(png(101, 10)))
    assert r.status_code == 422 and "101x10" in r.json()["message"] and "LMC_MAX_THUMBNAIL_SIDE" in r.json()["message"]
    assert _publish(api, study, thumbnail=b64(png(100, 100))).status_code == 201


def test_scripts_upload_a_thumbnail_later_and_only_the_author_or_an_admin_may(api, study):
    entry = _publish(api, study).json()
    url = f"/api/gallery/{entry['id']}/thumbnail"
    wrapped = "\n".join(b64(png(40, 30))[i : i + 76] for i in range(0, len(b64(png(40, 30))), 76))  # as the `base64` command prints it
    r = api.client.put(url, json={"png": wrapped}, headers=api.headers("editor"))
    assert r.status_code == 200 and (r.json()["thumbnail"]["width"], r.json()["thumbnail"]["height"]) == (40, 30)
    first_etag = r.json()["thumbnail"]["etag"]
    assert r.json()["updated_at"] > entry["updated_at"]  # caches keyed on the entry's update time refresh

    other = api.post("/api/tokens", {"user": "otto", "role": "editor"}, role="admin").json()["token"]
    assert api.client.put(url, json={"png": b64(png())}, headers={"Authorization": f"Bearer {other}"}).status_code == 403
    assert api.client.put(url, json={"png": b64(png())}, headers=api.headers("viewer")).status_code == 403
    assert api.client.put(url, json={"png": "AAAA"}, headers=api.headers("editor")).status_code == 422
    r = api.client.put(url, json={"png": b64(png())}, headers=api.headers("admin"))
    assert r.status_code == 200 and r.json()["thumbnail"]["width"] == 480 and r.json()["thumbnail"]["etag"] != first_etag
    assert api.get(f"{url}.png").content == png()

    assert api.delete(url, role="viewer").status_code == 403
    assert api.delete(url).status_code == 204
    assert api.get(f"{url}.png").status_code == 404 and api.get(f"/api/gallery/{entry['id']}").json()["thumbnail"] is None
    assert api.delete(url).status_code == 404
    assert api.delete(f"/api/gallery/{entry['id']}").status_code == 204  # the thumbnail goes with its entry
