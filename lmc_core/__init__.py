"""lmc_core: the science of LMC Lab, usable from a notebook with no server.

Datasets, models, training with controlled SGD noise, iterative magnitude pruning, linear mode
connectivity, and studies that tie them together in a resumable run directory.
"""

__version__ = "0.1.0"
