"""What a request larger than its bundle's measured one needs: the activation curve a
footprint measures, and how it is read between and past its points."""

from __future__ import annotations

import pytest

from fusedinf_cc.runtime.activations import ActivationCurve
from fusedinf_cc.runtime.footprint import measure_footprint
from tests.support import builders

MIB = 1 << 20


def test_the_curve_is_read_between_its_points_and_past_them_at_its_steeper_slope():
    curve = ActivationCurve(((3.0, 2 * MIB), (5.0, 10 * MIB)))
    assert curve.extra_bytes(0.5) == 0  # smaller than measured: nothing beyond its arena
    assert curve.extra_bytes(1.0) == 0
    assert curve.extra_bytes(2.0) == 1 * MIB  # halfway from (1, 0) to (3, 2 MiB)
    assert curve.extra_bytes(4.0) == 6 * MIB
    # Past the last point: the last step's slope (4 MiB a unit) beats the average (2.5).
    assert curve.extra_bytes(7.0) == 18 * MIB
    flat_at_the_end = ActivationCurve(((3.0, 8 * MIB), (5.0, 8 * MIB)))
    assert flat_at_the_end.extra_bytes(9.0) == 16 * MIB  # the average, 2 MiB a unit


def test_a_curve_nothing_was_probed_for_knows_only_the_measured_size():
    assert ActivationCurve().extra_bytes(1.0) == 0
    assert ActivationCurve().extra_bytes(2.0) is None


@pytest.mark.parametrize(
    "record",
    [
        {"not": "a list"},
        [[2.0]],
        [[0.5, 10]],  # a growth of at most 1 is the measured request
        [[2.0, -1]],
        [[2.0, 1.5]],  # bytes are whole
        [[4.0, 10], [2.0, 20]],
        [[True, 10]],
    ],
)
def test_a_curve_record_that_is_not_one_is_refused(record):
    assert ActivationCurve.from_record(record) is None


def test_a_curve_record_reads_back():
    curve = ActivationCurve(((4.0, 10), (16.0, 400)))
    assert ActivationCurve.from_record(curve.to_record()) == curve


def test_a_footprint_probes_the_curve_of_dynamic_dims_only(tmp_path):
    """A convolution over any image size: each doubling of its sides adds more, until a run
    adds tens of MiB; a model of fixed shapes has no larger request to probe."""
    dynamic = measure_footprint(builders.save(builders.dynamic_conv(), tmp_path / "d.onnx"))
    points = dynamic.activation_curve.points
    assert len(points) >= 3
    assert [growth for growth, _ in points] == [4.0**step for step in range(1, len(points) + 1)]
    assert points[-1][1] >= 16 * MIB
    assert points[-1][1] > 4 * points[-3][1] > 0  # it grows with the image
    fixed = measure_footprint(builders.save(builders.affine(0, width=64), tmp_path / "f.onnx"))
    assert fixed.activation_curve == ActivationCurve()
