"""Performance tracking, benchmarking, analysis and optimization (the platform's
``performance/`` module).

* ``tracking``: the RED metrics (rate, errors, duration) of HTTP services and Python
  callables through the SDK's ``MetricsCollector``; ``asgi`` and ``wsgi`` middleware.
* ``benchmarking``: an open-loop load generator (``monitoring perf bench``).
* ``stats``, ``analysis``, ``optimization``: pure statistics over series read from the
  store (``monitoring perf analyze``, ``monitoring perf suggest``); ``store_io`` reads them.
"""
