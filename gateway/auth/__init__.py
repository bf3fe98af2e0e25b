"""OAuth2 client-credentials authorization server issuing RFC 9068 JWT access tokens."""
