"""The edge: the OAuth2 authorization server (`gateway.auth`) and the generated Envoy config."""
