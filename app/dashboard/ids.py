"""Every component id of the dashboard, in one place: the layouts, the callbacks and the browser tests name the same strings.

One class per page (a namespace, not an Enum: Dash wants plain strings). The values are the DOM ids, which links,
CSS and the end-to-end tests rely on: change one only together with them. Pattern-matching ids are dicts whose
`type` is one of the *_TYPE constants.
"""

from __future__ import annotations

from typing import Any


class Shell:
    """The frame around every page (app.py)."""

    ROOT = "root"
    TOKEN = "token"  # dcc.Store in local storage: the visitor's API token
    NAV = "nav"  # dcc.Location: callbacks send the browser elsewhere through its href
    WHOAMI = "whoami"
    TOKEN_INPUT = "token-input"
    TOKEN_SAVE = "token-save"
    TOKEN_CLEAR = "token-clear"
    FOOTER = "footer"


class Studies:
    """The studies table (pages/studies.py)."""

    URL = "sl-url"
    SORT = "sl-sort"
    REV = "sl-rev"
    POLL = "sl-poll"
    COUNT = "sl-count"
    QUERY = "sl-q"
    STATUS = "sl-status"
    TAG = "sl-tag"
    ARCHIVED = "sl-archived"
    COLUMNS = "sl-cols"
    ARCHIVE = "sl-archive"
    UNARCHIVE = "sl-unarchive"
    NEW_TAG = "sl-newtag"
    ADD_TAG = "sl-addtag"
    BULK_MSG = "sl-bulk-msg"
    ERROR = "sl-error"
    TABLE = "sl-table"


class Launch:
    """The launch form (pages/launch.py)."""

    BASE = "ln-base"
    URL = "ln-url"
    SOURCE = "ln-source"
    PRESET = "ln-preset"
    CLONE = "ln-clone"
    QUEUE = "ln-queue"
    TAGS = "ln-tags"
    PRESET_HELP = "ln-preset-help"
    FORM = "ln-form"
    VALIDATION = "ln-validation"
    CHECK = "ln-check"
    ESTIMATE = "ln-estimate"
    CHANGES = "ln-changes"
    GO = "ln-go"
    RESULT = "ln-result"
    FIELD_TYPE = "cfg"  # {"type": FIELD_TYPE, "path": dotted config path, "kind": schema_form kind}
    FIELD_MSG_TYPE = "cfg-msg"  # {"type": FIELD_MSG_TYPE, "path": dotted config path}


class Study:
    """The study page (pages/study/): shared stores, header, tabs and their controls, publishing."""

    ID = "st-id"
    REV = "st-rev"
    INDEX = "st-index"
    RESULTS = "st-results"
    URL = "st-url"
    POLL = "st-poll"
    TITLE = "st-title"
    META = "st-meta"
    CANCEL = "st-cancel"
    RETRY = "st-retry"
    ACTION_MSG = "st-action-msg"
    PROGRESS = "st-progress"
    PROGRESS_CARD = "st-progress-card"
    OVERALL_BAR = "st-overall-bar"
    TABS = "st-tab"
    # sparsity tab
    BARRIER = "st-barrier"
    ACCURACY_GRAPH = "st-accuracy"
    BARRIER_GRAPH = "st-barrier-graph"
    # interpolation tab
    SOURCES = "st-sources"
    ROUNDS = "st-rounds"
    QUANTITY = "st-quantity"
    SPLITS = "st-splits"
    INTERP_GRAPH = "st-interp"
    # landscape tab
    SURFACE_STAGE = "st-surface-stage"
    SURFACE_QUANTITY = "st-surface-q"
    LOG = "st-log"
    SURFACE_MSG = "st-surface-msg"
    CONTOUR_GRAPH = "st-contour"
    SURFACE3D_GRAPH = "st-surface3d"
    # Hessian tab
    HESSIAN_ROUNDS_GRAPH = "st-hessian-rounds"
    HESSIAN_STAGE = "st-hessian-stage"
    HESSIAN_NUMBERS = "st-hessian-numbers"
    SPECTRUM_GRAPH = "st-spectrum"
    DIAGONAL_GRAPH = "st-diagonal"
    # sharpness tab
    SHARPNESS_STAGE = "st-sharpness-stage"
    SHARPNESS_NUMBERS = "st-sharpness-numbers"
    SHARPNESS_GRAPH = "st-sharpness"
    SHARPNESS_TABLE = "st-sharpness-table"
    # synthetic-sets tab
    SYNTHETIC = "st-synthetic"
    SYNTHETIC_GRID_TYPE = "synthetic-grid"  # {"type": SYNTHETIC_GRID_TYPE, "set": set name}
    # publishing to the gallery
    PUB_FIGURE = "pub-figure"
    PUB_TITLE = "pub-title"
    PUB_TAGS = "pub-tags"
    PUB_NOTES = "pub-notes"
    PUB_GO = "pub-go"
    PUB_MSG = "pub-msg"
    PUB_PERMALINK = "pub-permalink"

    @staticmethod
    def tab(value: str) -> str:
        """Return the id of the tab showing `value` (sparsity, paths, landscape, hessian, sharpness, synthetic)."""
        return f"st-tab-{value}"


class Compare:
    """The compare page (pages/compare.py)."""

    URL = "cp-url"
    IDS = "cp-ids"
    ROUND = "cp-round"
    METRIC = "cp-barrier"
    MSG = "cp-msg"
    SPARSITY_GRAPH = "cp-sparsity"
    INTERP_GRAPH = "cp-interp"
    LOG = "cp-log"
    SURFACES = "cp-surfaces"
    DIFF_ONLY = "cp-diffonly"
    DIFF = "cp-diff"
    SURFACE_TYPE = "cp-surface"  # {"type": SURFACE_TYPE, "i": position}


class Gallery:
    """The gallery (pages/gallery.py)."""

    URL = "ga-url"
    REV = "ga-rev"
    COUNT = "ga-count"
    QUERY = "ga-q"
    TAG = "ga-tag"
    AUTHOR = "ga-author"
    FIGURE = "ga-figure"
    SORT = "ga-sort"
    CARDS = "ga-cards"
    STAR_TYPE = "ga-star"  # {"type": STAR_TYPE, "id": entry id, "on": star (True) or unstar}


class Entry:
    """A gallery entry's permalink page (pages/entry.py)."""

    ID = "en-id"
    DOWNLOAD = "en-download"
    TITLE = "en-title"
    META = "en-meta"
    ERROR = "en-error"
    GRAPH = "en-graph"
    NOTES = "en-notes"
    PNG = "en-png"
    SVG = "en-svg"
    HTML = "en-html"
    CSV = "en-csv"
    NPZ = "en-npz"
    BUNDLE = "en-bundle"
    EXPORT_MSG = "en-export-msg"
    API_LINKS = "en-api-links"


def pattern(type_: str, /, **keys: Any) -> dict[str, Any]:
    """Return a pattern-matching id {"type": type_, **keys} (values may be dash.ALL / MATCH in callbacks)."""
    return {"type": type_, **keys}
