"""The standard query protocols the store serves next to its own ``POST /query``:
ClickHouse's HTTP interface (:mod:`.clickhouse_http`) and the Prometheus HTTP API
(:mod:`.prometheus_api`). Each module's ``routes(server)`` gives the Starlette routes
that :class:`~monitoring.sinks.clickhouse.query_server.QueryServer` mounts behind its
guard and its bounded query queue.
"""
