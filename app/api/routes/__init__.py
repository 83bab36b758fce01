"""HTTP routes, one module per resource; thin: the logic lives in the app.api modules they call."""
