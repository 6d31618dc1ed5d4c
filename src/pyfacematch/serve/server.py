"""Running the service: JSON logs and uvicorn.

uvicorn handles SIGTERM / SIGINT gracefully: it stops accepting connections, lets in-flight
requests finish (``timeout_graceful_shutdown``), then runs the lifespan shutdown, which closes
every gallery (index checkpoint, writer lock released; each enroll / remove was already committed
to SQLite before it was answered). One process, one event loop: one writer per gallery file, and a
second server on the same file is refused by the gallery's lock (:class:`GalleryLockedError`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from pyfacematch.serve.app import build_app
from pyfacematch.serve.config import ServeConfig

__all__ = ["JsonFormatter", "run_server"]

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn: the same message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extra fields.

    Callers put no biometric data (templates, landmarks) in messages or extras; the access log
    holds route templates, never request bodies or identity ids.
    """

    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                d[k] = v
        if record.exc_info and record.exc_info[0] is not None:
            d["error"] = record.exc_info[0].__name__
            d["traceback"] = self.formatException(record.exc_info)
        return json.dumps(d, default=str)


def _log_config(level: str) -> dict[str, Any]:
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": sys.stderr}
        },
        "loggers": {
            "pyfacematch": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            # uvicorn's access log prints raw paths (identity ids): ours logs route templates
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
    }


def run_server(config: ServeConfig) -> None:
    """Serve ``config`` until SIGTERM / SIGINT (blocks).

    Raises
    ------
    InputError
        Invalid configuration.
    GalleryFileError, GalleryLockedError, KeyFileError, WrongKeyError
        A gallery cannot be opened (the server stops; the error names the gallery and the
        ways to give its key).
    """
    import uvicorn

    config.check()
    app = build_app(config)
    ucfg = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=_log_config(config.log_level),
        access_log=False,
        ssl_certfile=config.ssl_certfile,
        ssl_keyfile=config.ssl_keyfile,
        timeout_graceful_shutdown=30,
        lifespan="on",
        server_header=False,
    )
    server = uvicorn.Server(ucfg)
    svc = app.state.service

    def fatal(exc: BaseException) -> None:
        server.should_exit = True  # graceful stop; the galleries opened so far are closed

    svc.on_fatal = fatal
    server.run()
    if svc.startup_error is not None:
        raise svc.startup_error  # the CLI prints it and exits non-zero
