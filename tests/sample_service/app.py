"""The smallest service the kit runs: no RPCs of its own, no events (see test_sample_service)."""

from pathlib import Path

import sqlalchemy as sa

from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.db import KitTables
from tests.sample_service.settings import Settings

metadata = sa.MetaData(schema="sample")
tables = KitTables.for_schema(metadata)


def compose(runtime: Runtime) -> Composition:
    return Composition(register=lambda server: None, service_names=[])


DEFINITION = ServiceDefinition(
    name="sample", module=__name__, settings=Settings, tables=tables,
    migrations=Path(__file__).parent / "migrations", stream=None, compose=compose)
