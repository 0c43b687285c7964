"""The store contract on a real PostgreSQL server (``FEDGE_TEST_POSTGRES_URL``; ``.ci/run`` starts one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from registry import RegistryStore, SqlRegistryStore
from tests.registry.test_store_contract import StoreContract, make_run


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, postgres_store_url: str) -> Iterator[RegistryStore]:
        s = SqlRegistryStore.from_url(postgres_store_url)
        yield s
        s.close()

    def test_data_survives_reopening_the_database(self, postgres_store_url: str) -> None:
        first = SqlRegistryStore.from_url(postgres_store_url)
        first.create_run(make_run())
        first.close()

        second = SqlRegistryStore.from_url(postgres_store_url)
        assert second.get_run("run-1").task == "digits"
        second.close()
