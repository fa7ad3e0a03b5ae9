"""A small file system to fill: a tmpfs mounted in a mount namespace of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the rest of the line with a tmpfs of "$1" bytes mounted on "$0", in a namespace of its own.
_SMALL_DISK = 'd=$0; s=$1; shift; mount -t tmpfs -o size="$s" tmpfs "$d" && exec "$@"'


def on_a_small_disk(folder: Path, size: int, script: str, *args: str) -> dict:
    """Run a Python `script` with `folder` a tmpfs of `size` bytes; its last line is JSON."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder.mkdir(parents=True, exist_ok=True)
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SMALL_DISK,
               str(folder), str(size), sys.executable, "-c", script, *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if "mount" in result.stderr and result.returncode != 0 and not result.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
