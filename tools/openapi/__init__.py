"""The OpenAPI generator: renders the documents the server serves into
``cluster/server/openapi/generated/`` (``python -m tools.openapi.generate``). Build host only."""
