"""The composition root: the document service's parts, wired (the kit runs them, `kit.app`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from google.longrunning import operations_pb2_grpc

from cartage.document.v1 import document_service_pb2, document_service_pb2_grpc
from services.document import conversion
from services.document.adapters import s3_store, tables
from services.document.adapters.events import DocumentEvents
from services.document.adapters.render import PdfRenderer
from services.document.adapters.repository import BatchRepository, DocumentRepository
from services.document.adapters.s3_store import S3ContentStore
from services.document.adapters.store import LocalContentStore
from services.document.api.operations import DocumentOperations
from services.document.api.servicer import DocumentServicer
from services.document.settings import Settings
from services.document.use_cases import BatchUseCases, Codecs, DocumentUseCases
from services.kit.app import Composition, Runtime, ServiceDefinition
from services.kit.jobs import Job
from services.kit.operations import OperationsServicer

SERVICE_NAME = document_service_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name
OPERATIONS_NAME = "google.longrunning.Operations"
# A proof of delivery may carry a signature and 10 photos of up to 10 MiB each.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024


def compose(runtime: Runtime) -> Composition:
    settings: Settings = runtime.settings
    store: LocalContentStore | S3ContentStore
    if settings.s3_bucket:
        store = s3_store.from_settings(settings.s3_endpoint, settings.s3_bucket,
                                       settings.s3_region)
    else:
        store = LocalContentStore(settings.store_dir)
        store.sweep_temporary()
    documents = DocumentUseCases(
        runtime.uow, DocumentRepository(), store, PdfRenderer(), DocumentEvents(),
        Codecs(conversion.DOCUMENT_CODEC, conversion.POD_CODEC), settings.key(),
        link_ttl=timedelta(seconds=settings.link_ttl_s), link_prefix=settings.link_prefix)
    events = DocumentEvents()
    batches = BatchUseCases(runtime.uow, BatchRepository(), documents, events,
                            conversion.batch_items, conversion.BATCH_ID_CODEC)
    servicer = DocumentServicer(documents, batches)
    store_view = DocumentOperations(batches)
    operations = OperationsServicer(store_view.names, store_view)

    def register(server: object) -> None:
        document_service_pb2_grpc.add_DocumentServiceServicer_to_server(servicer, server)
        operations_pb2_grpc.add_OperationsServicer_to_server(operations, server)

    return Composition(
        register=register,
        service_names=[SERVICE_NAME, OPERATIONS_NAME],
        jobs=[Job("batch-generation", batches.run)],
    )


DEFINITION = ServiceDefinition(
    name="document", module=__name__, settings=Settings, tables=tables.kit,
    migrations=Path(__file__).parent / "adapters" / "migrations", stream="DOCUMENT",
    compose=compose, max_message_bytes=MAX_MESSAGE_BYTES)
migrate = DEFINITION.migrate
serve = DEFINITION.serve
