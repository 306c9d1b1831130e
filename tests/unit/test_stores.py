"""The database side is chosen once, from the URL: a Database implementation per database, and the
repositories built on its connections are that database's subclasses."""

from __future__ import annotations

import pytest

from aiki.platform.db.due_runs_repo import DueRunRepository
from aiki.platform.db.engine import ConfigurationError, Database
from aiki.platform.db.postgres.conn import PgConn
from aiki.platform.db.postgres.database import PostgresDatabase
from aiki.platform.db.postgres.runs import PgDueRunRepository, PgRunRepository
from aiki.platform.db.postgres.schedules import PgScheduleRepository
from aiki.platform.db.raw import Params
from aiki.platform.db.runs_repo import RunRepository
from aiki.platform.db.schedules_repo import ScheduleRepository
from aiki.platform.db.sqlite.conn import SqliteConn
from aiki.platform.db.sqlite.database import SqliteDatabase
from aiki.platform.db.sqlite.runs import SqliteDueRunRepository, SqliteRunRepository
from aiki.platform.db.sqlite.schedules import SqliteScheduleRepository
from aiki.platform.db.statuses import HELD, record_task_once, sql


@pytest.mark.parametrize(
    ("url", "cls", "dialect"),
    [
        ("sqlite+aiosqlite:///aiki.db", SqliteDatabase, "sqlite"),
        ("sqlite:///aiki.db", SqliteDatabase, "sqlite"),
        ("postgresql://u@h/db", PostgresDatabase, "postgresql"),
        ("postgres://u@h/db", PostgresDatabase, "postgresql"),
        ("postgresql+asyncpg://u@h/db", PostgresDatabase, "postgresql"),
    ],
)
def test_the_url_picks_the_database_implementation(url: str, cls: type[Database], dialect: str) -> None:
    db = Database(url, migrate=False)
    assert type(db) is cls
    assert db.dialect == dialect
    assert db.auto_migrate is False


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="mysql"):
        Database("mysql://u@h/db")


def test_repositories_on_a_connection_are_its_databases_subclasses() -> None:
    pg, lite = PgConn(None), SqliteConn(None)
    cases = [
        (lambda c: RunRepository(c, "ns"), PgRunRepository, SqliteRunRepository),
        (lambda c: ScheduleRepository(c, "ns"), PgScheduleRepository, SqliteScheduleRepository),
        (DueRunRepository, PgDueRunRepository, SqliteDueRunRepository),
    ]
    for build, on_pg, on_sqlite in cases:
        assert type(build(pg)) is on_pg
        assert type(build(lite)) is on_sqlite
    repo = RunRepository(pg, "ns")
    assert (repo.conn, repo.namespace_id) == (pg, "ns")


def test_the_connections_spell_what_differs() -> None:
    pg, lite = PgConn(None), SqliteConn(None)
    assert (pg.for_update, pg.skip_locked) == (" FOR UPDATE", " FOR UPDATE SKIP LOCKED")
    assert (lite.for_update, lite.skip_locked) == ("", "")
    p = Params()
    assert pg.any_of(p, "id", ["a", "b"]) == "id = ANY($1)"
    assert p.values == [["a", "b"]]
    p = Params()
    assert lite.any_of(p, "id", ["a", "b"]) == "id IN ($1, $2)"
    assert p.values == ["a", "b"]
    assert (pg.any_of(Params(), "id", []), lite.any_of(Params(), "id", [])) == ("FALSE", "0")


def test_statuses_in_sql_come_from_the_state_table() -> None:
    assert sql("running") == "'running'"
    with pytest.raises(ValueError, match="not a run status"):
        sql("runing")
    assert HELD == "(status = 'running' OR (status = 'paused' AND lease_owner IS NOT NULL))"
    upsert = record_task_once("VALUES ($1)")
    assert "ON CONFLICT (run_id, address, seq) WHERE status <> 'discarded' DO UPDATE" in upsert
    assert upsert.endswith("WHERE tasks.status = 'awaiting_retry' RETURNING id")
