"""`python -m fusedinf_cc` is the `fusedinf-cc` command."""

from fusedinf_cc.cli import app

app(prog_name="fusedinf-cc")
