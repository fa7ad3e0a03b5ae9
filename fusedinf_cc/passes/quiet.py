"""onnx-ir (and onnxscript's folder) log a warning per skipped tensor or failed inference; the
pass table reports what matters instead."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

_LIBRARIES = ("onnx_ir", "onnxscript")


@contextlib.contextmanager
def quiet_onnx_ir() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _LIBRARIES]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous, strict=True):
            logger.setLevel(level)
