"""Operations: `monitoring doctor` checks and dead-letter recovery (`monitoring dlq`).

Pure parts (``checks``, ``deadletters``) hold no I/O; ``doctor`` and ``dlq_kafka`` talk
to the broker, the store and the disk ([operations](../../docs/operations.md)).
"""
