"""The HTTP layer: the Litestar app factory (composition root), routes, problem+json errors."""
