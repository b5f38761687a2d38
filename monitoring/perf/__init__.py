"""Performance tracking, benchmarking, analysis and optimization (the platform's
``performance/`` module).

* ``tracking``: the RED metrics (rate, errors, duration) of HTTP services and Python
  callables through the SDK's ``MetricsCollector``; ``asgi`` and ``wsgi`` middleware.
* ``benchmarking``: an open-loop load generator (``monitoring perf bench``).
* ``arrivals``, ``stats``, ``analysis``, ``optimization``: pure (schedules, statistics,
  findings, suggestions); ``store_io`` reads the store and is the Python API
  (``analyze_service``, ``analyze_model_versions``, ``suggestions``, ``fetch_runs``);
  ``report_section`` fills a report's Performance section. See docs/performance.md.
"""
