"""One runtime for the partitioned, stateful stream agents (see ``runtime.driver``)."""
