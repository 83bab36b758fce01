"""Dataset distillation: the synthetic set and its safe import, DM / DC / MTT, expert trajectories, set evaluation and rendering."""
