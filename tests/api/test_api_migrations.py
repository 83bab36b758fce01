"""Migrations: upgrade head on an empty SQLite and PostgreSQL database gives exactly the models' tables."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.api.db import alembic_config, make_engine, migrate
from app.api.models import Base
from tests.helpers.api import fresh_database


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_head_matches_models_and_downgrade_empties(kind, postgres, tmp_path):
    url = fresh_database(kind, postgres, tmp_path)
    engine = make_engine(url)
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        tables = set(inspect(engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], diff
        migrate(engine)  # a second start-up finds nothing to do
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_keeps_older_studies_and_the_first_sync_fills_their_new_columns(kind, postgres, tmp_path):
    """A store made by revision 0001 with a finished study: after the upgrade the study is intact, and the sync's first pass
    gives it LMC_QUEUE (where it was submitted) and its key results from the mirrored results table."""
    import sqlalchemy as sa

    from app.api.db import make_sessions
    from app.api.models import Study
    from app.api.settings import Settings
    from app.api.sync import Syncer

    url = fresh_database(kind, postgres, tmp_path)
    engine = make_engine(url)
    try:
        migrate(engine, "0001")
        now = sa.func.now() if kind == "postgresql" else sa.text("CURRENT_TIMESTAMP")
        studies = sa.table(
            "studies",
            *(
                sa.column(c)
                for c in (
                    "id",
                    "name",
                    "run_id",
                    "status",
                    "archived",
                    "submitted",
                    "stages_done",
                    "stages_total",
                    "created_at",
                    "updated_at",
                )
            ),
            sa.column("config", sa.JSON),
        )
        results = sa.table(
            "results",
            sa.column("study_id"),
            sa.column("run_id"),
            sa.column("updated_at"),
            *(sa.column(c, sa.JSON) for c in ("table", "analysis", "synthetic", "stages")),
        )
        row = {"source": "imp", "round": 1, "rewind_step": 0, "sparsity": 20.0, "accuracy_mean": 96.5, "error_barrier": 2.4}
        with engine.begin() as conn:
            conn.execute(
                studies.insert().values(
                    id="old",
                    name="old study",
                    run_id="r",
                    status="finished",
                    archived=False,
                    submitted=True,
                    stages_done=3,
                    stages_total=3,
                    created_at=now,
                    updated_at=now,
                    config={"pruning": {"mask_sources": ["dense", "imp"], "rewind_steps": [0]}},
                )
            )
            conn.execute(
                results.insert().values(study_id="old", run_id="r", updated_at=now, table=[row], analysis=[], synthetic=[], stages={})
            )
        migrate(engine)
        settings = Settings(database_url=url, data_dir=tmp_path, queue="gpu0")
        sessions = make_sessions(engine)
        with sessions() as session:
            study = session.get(Study, "old")
            assert (study.name, study.status, study.queue, study.final_accuracy) == ("old study", "finished", None, None)
        assert Syncer(sessions, None, settings).upgrade_rows() == {"queue": 1, "key_results": 1}
        with sessions() as session:
            study = session.get(Study, "old")
            assert (study.queue, study.final_accuracy, study.largest_barrier, study.sparsity_reached) == ("gpu0", 96.5, 2.4, 20.0)
    finally:
        engine.dispose()
