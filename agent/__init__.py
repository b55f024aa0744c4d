"""softadastra-agent: run network-failure scenarios against an HTTP API.

The agent writes through its own fault-injecting TCP proxy, reads the target back to
see what it really stored, streams every observation to Softadastra Cloud and prints
the run's score.
"""

__version__ = "0.1.0"
