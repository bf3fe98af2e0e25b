"""The carrier service's use cases: catalog (carriers, cards), quoting, tendering."""

from services.carrier.use_cases.catalog import CatalogUseCases
from services.carrier.use_cases.ports import Codecs, Page, TenderQuery
from services.carrier.use_cases.quoting import QuoteUseCases
from services.carrier.use_cases.tendering import AnswerOutcome, TenderUseCases

__all__ = ["AnswerOutcome", "CatalogUseCases", "Codecs", "Page", "QuoteUseCases", "TenderQuery",
           "TenderUseCases"]
