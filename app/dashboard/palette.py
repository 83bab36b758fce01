"""One colour per mask source, the same on every page and every figure (Okabe-Ito, readable by colour-blind viewers)."""

from __future__ import annotations

import zlib

# The five families of the paper's comparison get fixed colours, so "IMP is blue" holds across studies.
FIXED = {
    "dense": "#000000",
    "imp": "#0072B2",
    "random": "#999999",
    "random_global": "#5A5A5A",
}
# A family with several members (one per synthetic set) picks a shade by a stable hash of the set's name.
FAMILIES = {
    "distilled": ("#D55E00", "#E69F00", "#CC79A7", "#A6361C"),
    "subset": ("#009E73", "#56B4E9", "#2E7D5B", "#7FB3A0"),
    "combined": ("#8E44AD", "#F0E442", "#6C3483", "#B57EDC"),
}
OTHER = ("#332288", "#117733", "#44AA99", "#88CCEE", "#DDCC77", "#AA4499", "#882255")
# Secondary encodings: splits and the quantity along a path keep a fixed dash whatever the source.
SPLIT_DASH = {"test": "solid", "train": "dash"}
QUANTITY_DASH = {"error": "solid", "loss": "dot"}
# Up to four studies side by side on the compare page; marker symbols tell them apart, colours stay per source.
STUDY_SYMBOLS = ("circle", "square", "diamond", "triangle-up")
STUDY_DASHES = ("solid", "dash", "dot", "dashdot")
SURFACE_SCALE = "Viridis"


def _pick(options: tuple[str, ...], key: str) -> str:
    return options[zlib.crc32(key.encode()) % len(options)]


def family(source: str) -> str:
    """Return the family of a mask source name, e.g. 'distilled' for 'distilled.dm'."""
    return source.split(".", 1)[0]


def colour(source: str) -> str:
    """Return the hex colour of a mask source (stable across pages, studies and processes)."""
    if source in FIXED:
        return FIXED[source]
    fam = family(source)
    if fam in FAMILIES:
        return _pick(FAMILIES[fam], source)
    return _pick(OTHER, source)


def label(source: str) -> str:
    """Return a reader's name for a mask source: 'distilled.dm' -> 'distilled IMP (dm)'."""
    if source == "imp":
        return "IMP (real data)"
    if source == "dense":
        return "dense"
    if source == "random":
        return "random pruning (IMP's layer counts)"
    if source == "random_global":
        return "random pruning (global, the authors')"
    fam, _, rest = source.partition(".")
    if fam == "distilled":
        return f"distilled IMP ({rest})"
    if fam == "subset":
        return f"IMP on a random subset ({rest})"
    if fam == "combined":
        return f"IMP after distilled ({rest})"
    return source
