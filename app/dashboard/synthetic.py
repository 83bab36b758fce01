"""The synthetic sets of a study: their scores against a random real subset and noise, and what they look like."""

from __future__ import annotations

from typing import Any

from dash import dash_table

from . import figures, safetensors_np, ui
from .client import ApiError, Client
from .ids import Study, pattern


def score_rows(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one table row per synthetic set: method, size, and the accuracy of fresh networks on it, a subset and noise
    (mean ± population standard deviation over the n networks, n shown)."""

    def score(ev: dict[str, Any], name: str) -> str:
        e = ev.get(name) or {}
        if e.get("mean") is None:
            return "–"
        n = len(e.get("accuracies") or [])
        return f"{e['mean']:.1f} ± {e.get('std') or 0:.1f} (sd, n={n})" if n > 1 else f"{e['mean']:.1f} (n={n})"

    rows = []
    for s in sets:
        ev = s.get("evaluation") or {}
        rows.append(
            {
                "set": s.get("set"),
                "method": s.get("method"),
                "images": s.get("decoded"),
                "real examples used": "unknown" if s.get("real_examples") is None else s.get("real_examples"),
                "synthetic (acc %)": score(ev, "synthetic"),
                "random real subset (acc %)": score(ev, "random_subset"),
                "noise (acc %)": score(ev, "noise"),
            }
        )
    return rows


def view(client: Client, study_id: str, sets: list[dict[str, Any]]) -> list[Any]:
    """Return the sets' score table and one picture grid per set (images, or line plots for 1-D signals)."""
    rows = score_rows(sets)
    out: list[Any] = [
        dash_table.DataTable(  # type: ignore[attr-defined]  # dash.dash_table exports it by a star import mypy does not follow
            data=rows,
            columns=[{"name": k, "id": k} for k in rows[0]],
            style_as_list_view=True,
            style_cell={"fontFamily": "inherit", "padding": "4px 8px"},
            style_header={"fontWeight": "600"},
        )
    ]
    try:
        # each set's stored images, found by the API's reading of their stage key (kind synthetic, the set's name)
        files = {
            a["stage_ref"]["set"]: a
            for a in client.artifacts(study_id)
            if a["name"] == "images.safetensors" and (a.get("stage_ref") or {}).get("kind") == "synthetic"
        }
    except ApiError as err:
        return [*out, ui.error(err.message)]
    for s in sets:
        art = files.get(s.get("set"))
        if art is None:
            out.append(ui.empty(f"set {s.get('set')}: no stored images"))
            continue
        try:
            tensors = safetensors_np.load(client.get_bytes(art["url"]))
        except (ApiError, ValueError) as err:
            out.append(ui.error(getattr(err, "message", str(err)), title=f"set {s.get('set')}"))
            continue
        fig = figures.synthetic_grid(tensors["images"], tensors["labels"], title=f"set {s.get('set')} ({s.get('method')}): a few per class")
        out.append(ui.graph(pattern(Study.SYNTHETIC_GRID_TYPE, set=str(s.get("set"))), figure=fig))
    return out
