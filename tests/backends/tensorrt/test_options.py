"""TensorRT build options and optimisation profiles, with trtexec's names, checked without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.tensorrt.options import (
    EngineOptions,
    build_profiles,
    check_for_tensorrt,
    parse_engine_options,
    parse_mem_pool_sizes,
)
from fusedinf_cc.common.errors import UserInputError

# profiles ---------------------------------------------------------------------------------------
INPUTS = [
    TensorSpec("image", np.dtype(np.float32), ("batch", 3, 224, 224)),
    TensorSpec("mask", np.dtype(np.int64), (1, 16)),
]


# options ----------------------------------------------------------------------------------------
def test_mem_pool_sizes_take_trtexec_names_and_units():
    pools = parse_mem_pool_sizes("workspace:2GiB,dlaSRAM:1MiB,tacticSharedMem:48KiB")
    assert pools == {"workspace": 2 * 2**30, "dlaSRAM": 2**20, "tacticSharedMem": 48 * 1024}
    with pytest.raises(UserInputError, match="POOL:SIZE with POOL one of workspace"):
        parse_mem_pool_sizes("scratch:1GiB")
    with pytest.raises(UserInputError, match="--mem-pool-size workspace"):
        parse_mem_pool_sizes("workspace:lots")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"builder_opt_level": 6}, "use 0 to 5"),
        ({"hardware_compatibility": "turing+"}, "use one of none, ampere+"),
        ({"min_shapes": "x:1x8", "max_shapes": "x:4x8"}, "must name the same inputs"),
        (
            {
                "shapes": "x:1x8",
                "min_shapes": "x:1x8",
                "opt_shapes": "x:2x8",
                "max_shapes": "x:4x8",
            },
            "either --shapes or --min",
        ),
        ({"opt_shapes": "x:1xq"}, "--opt-shapes 'x:1xq'"),
    ],
)
def test_option_mistakes_are_one_line_errors(flags, message):
    with pytest.raises(UserInputError, match=message):
        parse_engine_options(**flags)


@pytest.mark.parametrize(
    ("flags", "version", "message"),
    [
        ({"strongly_typed": True, "fp16": True}, "10.3.0", "drop --fp16/--int8"),
        ({"weight_streaming": True}, "10.16.1.11", "--weight-streaming needs --strongly-typed"),
        ({"int8": True}, "10.3.0", "--int8 needs --calib-cache"),
        ({"hardware_compatibility": "same-compute-capability"}, "10.8.0", "needs TensorRT 10.9"),
        ({"int8": True, "calib_cache": "CACHE"}, "11.4.0.106", "has no INT8 calibrators"),
    ],
)
def test_what_one_tensorrt_version_cannot_build_is_refused_in_one_line(
    tmp_path, flags, version, message
):
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-1001-EntropyCalibration2\n")
    flags = {key: cache if value == "CACHE" else value for key, value in flags.items()}
    options = parse_engine_options(**flags)
    with pytest.raises(UserInputError, match=message):
        check_for_tensorrt(options, version)


@pytest.mark.parametrize(
    ("flags", "version"),
    [
        ({"strongly_typed": True, "fp16": True}, "11.4.0.106"),  # 11: fp16 is the graph's
        ({"weight_streaming": True}, "11.0.0"),  # 11: every network is strongly typed
        ({"int8": True}, "11.4.0.106"),  # 11: scales from Q/DQ nodes, checked at build
        ({"hardware_compatibility": "same-compute-capability"}, "10.9.0.34"),
        ({"fp16": True, "hardware_compatibility": "ampere+"}, "10.3.0"),
    ],
)
def test_what_a_tensorrt_version_can_build_passes(flags, version):
    check_for_tensorrt(parse_engine_options(**flags), version)


def test_calibration_cache_must_exist_and_go_with_int8(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        parse_engine_options(int8=True, calib_cache=tmp_path / "missing.cache")
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-1001-EntropyCalibration2\n")
    with pytest.raises(UserInputError, match="only used with --int8"):
        parse_engine_options(calib_cache=cache)
    options = parse_engine_options(int8=True, calib_cache=cache, builder_opt_level=0)
    assert options.to_record()["calib_cache"] == "calib.cache"
    assert options.to_record()["builder_opt_level"] == 0


def test_fixed_shapes_give_a_profile_with_min_opt_max_equal():
    (profile,) = build_profiles(INPUTS, parse_engine_options(shapes="image:4x3x224x224"))
    assert (profile.name, profile.min, profile.opt, profile.max) == (
        "image",
        (4, 3, 224, 224),
        (4, 3, 224, 224),
        (4, 3, 224, 224),
    )


def test_ranges_cover_each_dynamic_input_and_skip_static_ones():
    options = parse_engine_options(
        min_shapes="image:1x3x224x224",
        opt_shapes="image:8x3x224x224",
        max_shapes="image:16x3x224x224",
    )
    (profile,) = build_profiles(INPUTS, options)
    assert profile.min[0] == 1 and profile.opt[0] == 8 and profile.max[0] == 16


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {},
            r"input 'image' has dynamic dims \(batchx3x224x224\): give --shapes image:1x3x224x224",
        ),
        ({"shapes": "image:1x3x224"}, "does not fit the model's batchx3x224x224"),
        ({"shapes": "image:1x1x224x224"}, "does not fit"),
        ({"shapes": "image:0x3x224x224"}, "at least 1"),
        ({"shapes": "image:1x3x224x224,label:1"}, r"unknown inputs \['label'\]"),
        ({"shapes": "image:1x3x224x224,mask:1x8"}, "'mask': shape 1x8 does not fit"),
        (
            {
                "min_shapes": "image:4x3x224x224",
                "opt_shapes": "image:2x3x224x224",
                "max_shapes": "image:8x3x224x224",
            },
            "min <= opt <= max",
        ),
    ],
)
def test_profile_mistakes_name_the_input(flags, message):
    with pytest.raises(UserInputError, match=message):
        build_profiles(INPUTS, parse_engine_options(**flags))


def test_engine_options_default_to_none():
    assert EngineOptions().to_record()["hardware_compatibility"] == "none"
