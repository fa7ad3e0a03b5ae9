"""Device profiles: named ones with their sources, numbers given alone or over a name's."""

from __future__ import annotations

import pytest

from fusedinf_cc.common.errors import UserInputError
from fusedinf_cc.limits.profiles import PROFILES, device_profile, parse_bandwidth


def test_named_profiles_carry_published_numbers_and_say_where_they_come_from():
    sd, nvme = PROFILES["orin-nano-sd"], PROFILES["orin-nano-nvme"]
    assert (sd.memory_bytes, sd.read_bytes_per_s) == (8 * 2**30, 67 * 10**6)
    assert nvme.read_bytes_per_s == 1_362 * 10**6
    assert all("hdparm" in profile.source for profile in PROFILES.values())
    assert device_profile("orin-nano-sd") == sd
    assert sd.describe() == "orin-nano-sd (memory 8.0 GiB, reads 67 MB/s)"


def test_numbers_alone_or_over_a_named_profile():
    assert device_profile(None) is None
    custom = device_profile(None, memory_limit="2GiB", read_bandwidth="67MB/s", cpus=2)
    assert (custom.memory_bytes, custom.read_bytes_per_s, custom.cpus) == (2**31, 67e6, 2)
    smaller = device_profile("orin-nano-sd", memory_limit="512MiB")
    assert smaller.memory_bytes == 512 * 2**20 and smaller.read_bytes_per_s == 67 * 10**6
    assert smaller.name == "orin-nano-sd, changed"
    assert parse_bandwidth("100MiB/s") == 100 * 2**20 and parse_bandwidth("5000") == 5000
    card = device_profile("orin-nano-sd", read_ahead="128KiB")
    assert card.read_ahead_bytes == 128 * 1024 and card.read_bytes_per_s == 67 * 10**6
    assert (
        card.describe()
        == "orin-nano-sd, changed (memory 8.0 GiB, reads 67 MB/s, read-ahead 128.0 KiB)"
    )
    assert device_profile(None, read_ahead="0").read_ahead_bytes == 0


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"name": "raspberry-pi"}, "--device-profile 'raspberry-pi': unknown; known: orin"),
        ({"name": None, "read_bandwidth": "0MB/s"}, "more than 0 bytes a second"),
        ({"name": None, "read_bandwidth": "fast"}, "--read-bandwidth 'fast'"),
        ({"name": None, "memory_limit": "0"}, "--memory-limit '0': must be more than 0"),
        ({"name": None, "cpus": 0.0}, "--cpus 0.0: a number of cores above 0"),
        ({"name": None, "read_ahead": "1000"}, "--read-ahead '1000': a whole number of KiB"),
        ({"name": None, "read_ahead": "-4KiB"}, "--read-ahead '-4KiB': a size cannot be negative"),
    ],
)
def test_a_profile_that_cannot_be_is_one_line(arguments, complaint):
    with pytest.raises(UserInputError, match=complaint.replace("(", r"\(")):
        device_profile(**arguments)
