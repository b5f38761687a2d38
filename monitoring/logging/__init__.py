"""The platform's ``logging/`` module: ``logger``, ``log_processor``, ``log_analyzer``,
``log_storage``, re-exporting ``monitoring.log``, ``monitoring.logs`` and the SDK's shippers.

The name does not shadow the standard library: every module of the package imports
absolutely (``import logging`` is always the standard library's), and this package
imports nothing itself (tests/unit/test_python_api_layout.py holds both)."""
