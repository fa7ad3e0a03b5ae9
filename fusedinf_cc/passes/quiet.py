"""onnx-ir logs a warning per skipped tensor; the pass table reports what matters instead."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_onnx_ir() -> Iterator[None]:
    logger = logging.getLogger("onnx_ir")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)
