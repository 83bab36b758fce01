"""Foundations: config as pure data, shared types, the run layout, seeding, events, storage, device and heap tuning.

Imports nothing else from lmc_core.
"""
