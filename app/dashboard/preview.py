"""Static previews for gallery cards, drawn server-side as small SVGs (no kaleido, no browser, no WebGL context per card)."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np

from . import palette
from .arrays import decode, values

W, H, PAD = 320, 180, 14
VIRIDIS = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725")
MAX_CELLS = 40  # a 40x40 preview of a 101x101 surface is indistinguishable at thumbnail size and 6x lighter


def _frame(body: str, caption: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">'
        f'<rect width="{W}" height="{H}" fill="#ffffff"/>{body}'
        f'<text x="{PAD}" y="{H - 4}" font-family="sans-serif" font-size="10" fill="#666">{escape(caption)}</text></svg>'
    )


def _lines(series: list[tuple[np.ndarray, np.ndarray, str]], caption: str) -> str:
    pts = [(x[np.isfinite(y)], y[np.isfinite(y)], c) for x, y, c in series]
    pts = [p for p in pts if p[0].size]
    if not pts:
        return placeholder(caption)
    xs, ys = np.concatenate([p[0] for p in pts]), np.concatenate([p[1] for p in pts])
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    sx = (W - 2 * PAD) / ((x1 - x0) or 1.0)
    sy = (H - 2 * PAD - 10) / ((y1 - y0) or 1.0)
    body = f'<line x1="{PAD}" y1="{H - PAD - 10}" x2="{W - PAD}" y2="{H - PAD - 10}" stroke="#ccc"/>'
    for x, y, colour in pts:
        coords = " ".join(f"{PAD + (a - x0) * sx:.1f},{H - PAD - 10 - (b - y0) * sy:.1f}" for a, b in zip(x, y, strict=True))
        body += f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
    return _frame(body, caption)


def _heatmap(z: np.ndarray, caption: str) -> str:
    step = max(1, int(np.ceil(max(z.shape) / MAX_CELLS)))
    z = z[::step, ::step]
    finite = z[np.isfinite(z)]
    if not finite.size:
        return placeholder(caption)
    lo, hi = float(finite.min()), float(finite.max())
    rows, cols = z.shape
    cw, ch = (W - 2 * PAD) / cols, (H - 2 * PAD - 10) / rows
    cells = []
    for i in range(rows):
        for j in range(cols):
            v = z[i, j]
            k = 0 if not np.isfinite(v) else int((v - lo) / ((hi - lo) or 1.0) * (len(VIRIDIS) - 1))
            # rows follow y upwards, as on the interactive contour
            cells.append(
                f'<rect x="{PAD + j * cw:.1f}" y="{H - PAD - 10 - (i + 1) * ch:.1f}" '
                f'width="{cw + 0.6:.1f}" height="{ch + 0.6:.1f}" fill="{VIRIDIS[k]}"/>'
            )
    return _frame("".join(cells), caption)


def placeholder(caption: str = "no preview") -> str:
    """Return a neutral card picture for an entry whose data cannot be drawn."""
    return _frame(
        f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD - 10}" fill="#f2f4f7" stroke="#d0d5dd"/>'
        f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-family="sans-serif" font-size="13" fill="#98a2b3">'
        f"{escape(caption)}</text>",
        "",
    )


def svg(entry: dict[str, Any], data: dict[str, Any]) -> str:
    """Return an SVG preview of a gallery entry's figure from its data."""
    name = entry.get("figure") or "sparsity"
    if name == "surface":
        z = np.log10(np.clip(decode(data["loss"]), 1e-6, None))
        return _heatmap(z, f"loss surface (log) · {data.get('stage', '')}")
    if name == "interpolation":
        curves = [c for c in data.get("curves", []) if "test" in c.get("error", {})]
        return _lines(
            [(decode(c["alphas"]), decode(c["error"]["test"]), palette.colour(c["source"])) for c in curves], "test error along the path"
        )
    if name == "hessian":
        d = data.get("density")
        if not d:
            return placeholder("no spectral density")
        return _lines([(decode(d["grid"]), np.log10(np.clip(decode(d["values"]), 1e-12, None)), "#0072B2")], "spectral density (log)")
    return _lines(
        [(values(s["sparsity"]), values(s["error_barrier"]), palette.colour(s["source"])) for s in data.get("series", [])],
        "error barrier vs sparsity",
    )
