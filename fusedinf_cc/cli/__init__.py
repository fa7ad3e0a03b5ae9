"""The `fusedinf-cc` command: parses arguments, calls the library, renders results. Nothing else.

`app` builds the Typer application from one module per command group (`fuse`, `measure`,
`run`, `bundle`, `serve`); each command imports the library it calls when it runs, so
`--help` and `run` do not load the compiler. `tables` renders reports.
"""

from fusedinf_cc.cli.app import app

__all__ = ["app"]
