from tests.sample_service.app import DEFINITION

DEFINITION.main()
