"""`fusedinf-cc serve`: on-demand inference over HTTP (KServe v2 / Triton protocol) on the loader.

Needs the `serve` extra (Starlette, uvicorn); importing this package without them fails in one line
from the CLI.
"""

SERVE_HINT = "serving needs Starlette and uvicorn: pip install 'fusedinf-cc[serve]'"
