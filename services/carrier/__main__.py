"""`python -m services.carrier [serve|migrate]` (CARRIER_WORKERS=N: N processes, see kit.app)."""

from services.carrier.app import DEFINITION

if __name__ == "__main__":
    DEFINITION.main()
