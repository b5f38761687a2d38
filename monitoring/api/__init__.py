"""HTTP surfaces: one ASGI server (Starlette on uvicorn) with one guard for every process.

Health, self-metrics, the store's read-only queries and the notifier's API all run on
:class:`~monitoring.api.server.ApiServer`; :mod:`monitoring.api.guard` is the one place
that authenticates, checks Host and Origin, and bounds request bodies.
"""
