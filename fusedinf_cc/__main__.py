"""`python -m fusedinf_cc` is the `fusedinf-cc` command."""

import sys

try:
    from fusedinf_cc.cli import main
except KeyboardInterrupt:  # Ctrl-C before `main` could take over
    print("error: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

main()
