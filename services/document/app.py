"""The composition root: the document service's parts, wired (the kit runs them, `kit.app`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cartage.document.v1 import document_service_pb2, document_service_pb2_grpc
from services.document import conversion
from services.document.adapters import tables
from services.document.adapters.events import DocumentEvents
from services.document.adapters.render import PdfRenderer
from services.document.adapters.repository import DocumentRepository
from services.document.adapters.store import LocalContentStore
from services.document.api.servicer import DocumentServicer
from services.document.settings import Settings
from services.document.use_cases import Codecs, DocumentUseCases
from services.kit.app import Composition, Runtime, ServiceDefinition

SERVICE_NAME = document_service_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name


def compose(runtime: Runtime) -> Composition:
    settings: Settings = runtime.settings
    store = LocalContentStore(settings.store_dir)
    store.sweep_temporary()
    documents = DocumentUseCases(
        runtime.uow, DocumentRepository(), store, PdfRenderer(), DocumentEvents(),
        Codecs(conversion.DOCUMENT_CODEC, conversion.POD_CODEC), settings.key(),
        link_ttl=timedelta(seconds=settings.link_ttl_s), link_prefix=settings.link_prefix)
    servicer = DocumentServicer(documents)
    return Composition(
        register=lambda server: document_service_pb2_grpc.add_DocumentServiceServicer_to_server(
            servicer, server),
        service_names=[SERVICE_NAME],
    )


DEFINITION = ServiceDefinition(
    name="document", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="DOCUMENT",
    compose=compose)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
