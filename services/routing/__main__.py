"""`python -m services.routing [serve|migrate]`."""

from services.routing.app import DEFINITION

if __name__ == "__main__":
    DEFINITION.main()
