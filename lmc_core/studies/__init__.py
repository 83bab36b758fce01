"""Studies: stage plans, config validation against every registry, the run store, stage kinds, tables, presets and the
science subcommands."""
