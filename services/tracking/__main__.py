"""`python -m services.tracking [serve|migrate]` (TRACKING_WORKERS=N: N processes, see kit.app)."""

from services.tracking.app import DEFINITION

if __name__ == "__main__":
    DEFINITION.main()
