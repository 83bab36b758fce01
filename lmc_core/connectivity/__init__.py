"""Linear mode connectivity: the path between two networks, its barriers, BatchNorm handling and the batched evaluation engine."""
