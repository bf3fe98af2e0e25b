"""`python -m services.document [serve|migrate]` (DOCUMENT_WORKERS=N: N processes, see kit.app)."""

from services.document.app import DEFINITION

if __name__ == "__main__":
    DEFINITION.main()
