"""Datasets: the base type and registry, built-in generators, local file readers, augmentation and DSA."""
