"""The former name of `serve/ray_replicas.py`, kept for one release so that Ray config files
whose `import_path` is `fusedinf_cc.serve.ray_engine:app_builder` still deploy."""

from __future__ import annotations

import warnings

from fusedinf_cc.serve.ray_replicas import app_builder, application, serve_on_ray

warnings.warn(
    "fusedinf_cc.serve.ray_engine is now fusedinf_cc.serve.ray_replicas; the old name goes in "
    "the next release",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["app_builder", "application", "serve_on_ray"]
