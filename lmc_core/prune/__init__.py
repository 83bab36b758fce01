"""Pruning: global and layerwise magnitude pruning with exact counts, and the mask sources a study prunes with."""
