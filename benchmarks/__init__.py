"""Benchmarks of the ingest → stream → worker → PostgreSQL pipeline; see `__main__`."""
