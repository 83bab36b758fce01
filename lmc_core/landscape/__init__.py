"""Loss landscapes: planes through parameter space, grids, and surfaces evaluated on them."""
