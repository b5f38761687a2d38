"""The wire: the Avro contracts (``schemas/``), the codec registry, and the hand-written
codecs of the hot topics (one module of Avro primitives under them)."""
