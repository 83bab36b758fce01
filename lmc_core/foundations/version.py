"""The package version and the versions a result depends on. Torch-free to import: the API reports the version."""

from __future__ import annotations

import platform

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Return the versions a result depends on, recorded with every run and every synthetic set."""
    import numpy as np
    import torch

    return {
        "lmc_lab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        # CPU GEMMs split sums by thread count, so weights depend on it at the last bit (and, after chaos, beyond).
        "torch_threads": str(torch.get_num_threads()),
    }
