"""The admin's tests run on both state stores: a SQLite file and a private PostgreSQL cluster
(tests/postgres.py), through the `state` fixture's AdminConfig fields."""

from __future__ import annotations

import pytest

from tests.postgres import Postgres


@pytest.fixture(scope="session")
def postgres():
    pg = Postgres()
    yield pg
    pg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request, tmp_path) -> dict:
    """AdminConfig fields for a fresh, empty state store of each kind."""
    fields = {"state_path": tmp_path / "admin.sqlite3"}
    if request.param == "postgresql":
        fields["state_url"] = request.getfixturevalue("postgres").fresh_database()
    return fields
