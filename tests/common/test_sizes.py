"""Byte sizes as people write them, and as they are printed."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.common.sizes import format_bytes, parse_size


@pytest.mark.parametrize(
    ("text", "count", "shown"),
    [
        ("512", 512, "512 B"),
        ("1KiB", 1024, "1.0 KiB"),
        ("1.5MiB", 3 * 2**19, "1.5 MiB"),
        ("300MB", 300 * 10**6, "286.1 MiB"),
        ("2GiB", 2 * 2**30, "2.0 GiB"),
        ("5000GiB", 5000 * 2**30, "5000.0 GiB"),
    ],
)
def test_sizes_read_as_written_and_print_in_the_largest_fitting_unit(text, count, shown):
    assert parse_size(text, "--budget") == count
    assert format_bytes(count) == shown


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("lots", "use e.g. 512MiB"),
        ("-1MiB", "negative"),
        ("1e400MiB", "use e.g. 512MiB"),  # infinite once read
        ("infGiB", "use e.g. 512MiB"),
        ("nanKiB", "use e.g. 512MiB"),
        ("9" * 30, "more bytes than any machine has"),
        ("1e30B", "use e.g. 512MiB"),
    ],
)
def test_a_size_that_is_not_one_names_the_option(text, complaint):
    with pytest.raises(UserInputError, match=f"--budget '{text}': .*{complaint}"):
        parse_size(text, "--budget")
