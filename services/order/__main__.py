"""`python -m services.order [serve|migrate]` (ORDER_WORKERS=N: N processes, see kit.app)."""

from services.order.app import DEFINITION

if __name__ == "__main__":
    DEFINITION.main()
