"""The HTTP API and SQL store of LMC Lab: FastAPI routes over a SQLAlchemy store, with Redis holding only the queue.

`create_app()` in `app.api.main` builds the service; nothing here imports torch.
"""
