"""What an engine was built for against this machine, checked before TensorRT sees it."""

from __future__ import annotations

import json

import pytest

from fusedinf_cc.artifacts.manifest import Manifest
from fusedinf_cc.backends.tensorrt.compat import (
    EngineTarget,
    IncompatibleEngineError,
    check_engine_compatible,
)
from fusedinf_cc.backends.tensorrt.names import check_supported_tensorrt
from fusedinf_cc.common.errors import BackendUnavailableError

# compatibility ----------------------------------------------------------------------------------
ORIN = EngineTarget("10.3.0", "8.7", "Orin")


@pytest.mark.parametrize(
    ("built", "here", "problem"),
    [
        (ORIN, EngineTarget("10.3.0", "8.7", "Orin"), None),
        (ORIN, EngineTarget("10.7.0", "8.7", "Orin"), "TensorRT versions differ"),
        (ORIN, EngineTarget("10.3.0", "8.9", "RTX 4090"), "compute capabilities differ"),
        (
            EngineTarget("10.3.0", "8.7", version_compatible=True),
            EngineTarget("10.7.0", "8.7"),
            None,
        ),
        (
            EngineTarget("10.7.0", "8.7", version_compatible=True),
            EngineTarget("10.3.0", "8.7"),
            "same or a later TensorRT",
        ),
        (
            EngineTarget("10.3.0", "8.7", version_compatible=True),
            EngineTarget("11.0.0", "8.7"),
            "same or a later TensorRT",
        ),
        (
            EngineTarget("10.3.0", "8.7", hardware_compatibility="ampere+"),
            EngineTarget("10.3.0", "9.0"),
            None,
        ),
        (
            EngineTarget("10.3.0", "8.7", hardware_compatibility="ampere+"),
            EngineTarget("10.3.0", "7.5"),
            "Ampere or newer",
        ),
    ],
)
def test_engine_compatibility(built, here, problem):
    if problem is None:
        check_engine_compatible(built, here, "fused.engine")
        return
    with pytest.raises(IncompatibleEngineError) as raised:
        check_engine_compatible(built, here, "fused.engine")
    message = str(raised.value)
    assert problem in message
    assert f"built for TensorRT {built.tensorrt} on compute capability {built.compute_capability}"
    assert f"this machine has TensorRT {here.tensorrt}" in message
    assert "rebuild it here" in message and "\n" not in message


def test_device_record_round_trips_through_the_manifest():
    target = EngineTarget("10.3.0", "8.7", "Orin", version_compatible=True)
    manifest = Manifest(models=[], device=target.to_record())
    again = Manifest.from_dict(json.loads(manifest.to_json()))
    assert EngineTarget.from_record(again.device) == target
    assert "device" not in manifest.to_dict(reproducible=True)


# TensorRT 10 and 11: versions, and precision from the graph ------------------------------------
@pytest.mark.parametrize("version", ["8.6.2", "10.2.0", "12.0.0", "unknown"])
def test_an_unsupported_tensorrt_is_refused_naming_the_range(version):
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 10\.3 to 11\.x"):
        check_supported_tensorrt(version)


@pytest.mark.parametrize("version", ["10.3.0", "10.16.1.11", "11.4.0.106", "10.7.0.post1"])
def test_a_supported_tensorrt_passes(version):
    check_supported_tensorrt(version)
