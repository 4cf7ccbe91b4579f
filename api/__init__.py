"""The HTTP API: routes, schemas, auth and dependency wiring. It never imports torch."""
