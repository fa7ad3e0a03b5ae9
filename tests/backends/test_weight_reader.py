"""The weight reader brings mapped weights' pages in from storage, in order, and stops."""

from __future__ import annotations

import mmap
import threading
import time
from types import SimpleNamespace

import numpy as np

from fusedinf_cc.backends.weight_reader import WeightReader
from fusedinf_cc.runtime.pagecache import drop_file_pages
from tests.support.pagecache import cached_bytes


def _mapped_weights(tmp_path, sizes):
    """A side file of weights back to back, mapped, each as the pool holds one (`.array`)."""
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "weights.data"
    path.write_bytes(b"".join(np.full(size, 1, np.uint8).tobytes() for size in sizes))
    drop_file_pages([path])
    with open(path, "rb") as data:
        mapping = mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)
    offsets = np.cumsum([0, *sizes[:-1]])
    weights = [
        SimpleNamespace(array=np.frombuffer(mapping, np.uint8, count=size, offset=int(offset)))
        for size, offset in zip(sizes, offsets, strict=True)
    ]
    return path, mapping, weights


def _wait_ends_while_held(reader: WeightReader, gate: threading.Event, seconds: float) -> bool:
    """Start `reader`, whose populating holds a chunk until `gate` is set; whether a wait for
    the rest to fit `seconds` ended while it was held. Lets the reader finish."""
    reader.start()
    waiting = threading.Thread(target=reader.wait_until_within, args=(seconds,))
    waiting.start()
    waiting.join(5)
    ended = not waiting.is_alive()
    gate.set()
    reader.wait()
    waiting.join(5)
    return ended


def test_reading_brings_every_page_in_from_storage(tmp_path):
    path, _, weights = _mapped_weights(tmp_path, [3 * 2**20, 5000, 2**20 + 17])
    assert cached_bytes(path) == 0
    reader = WeightReader(weights)
    assert len(reader.ranges) == 1  # neighbours in the file: one range
    reader.read()
    assert cached_bytes(path) == -(-path.stat().st_size // mmap.PAGESIZE) * mmap.PAGESIZE
    assert reader.bytes_read == reader.size >= path.stat().st_size


def test_a_reader_on_its_thread_finishes_and_a_stopped_one_reads_no_more(tmp_path):
    path, _, weights = _mapped_weights(tmp_path, [2**20] * 4)
    reader = WeightReader(weights)
    reader.start()
    reader.wait()
    assert cached_bytes(path) == path.stat().st_size
    other, _, untouched = _mapped_weights(tmp_path / "other", [2**20] * 4)
    stopped = WeightReader(untouched)
    stopped.stop()
    stopped.read()
    assert stopped.bytes_read == 0 and cached_bytes(other) == 0


def test_ranges_cover_whole_pages_and_keep_the_order_given(tmp_path):
    _, _, weights = _mapped_weights(tmp_path, [3 * mmap.PAGESIZE, 100, 4 * mmap.PAGESIZE])
    ranges = WeightReader([weights[2], weights[0]]).ranges
    assert len(ranges) == 2 and ranges[0][0] > ranges[1][0]  # read as given: last one first
    assert all(start % mmap.PAGESIZE == 0 for start, _ in ranges)


def test_a_file_reader_reads_the_spans_asked_through_its_own_mapping(tmp_path):
    path, _, _ = _mapped_weights(tmp_path, [2**20] * 4)
    reader = WeightReader.of_file(path, [(2 * 2**20, 2**20), (0, 2**20)])
    assert reader.size == 2 * 2**20
    (third, _), (first, _) = reader.ranges  # in the order asked
    assert third - first == 2 * 2**20
    reader.read()
    assert reader.bytes_read == reader.size and cached_bytes(path) >= 2 * 2**20
    drop_file_pages([path])
    whole = WeightReader.of_file(path)
    whole.start()
    whole.wait()
    assert cached_bytes(path) == path.stat().st_size
    empty = tmp_path / "empty.data"
    empty.write_bytes(b"")
    assert WeightReader.of_file(empty).size == 0


def test_a_wait_measures_the_rate_from_the_first_chunk_not_the_storages_latency(
    tmp_path, monkeypatch
):
    """A read whose first chunk came late (the storage's latency) and whose next came at once:
    the rest is near, so a wait for it to fit 0.2 s ends without waiting for the rest."""
    from fusedinf_cc.backends import weight_reader

    _, _, weights = _mapped_weights(tmp_path, [weight_reader.CHUNK_BYTES] * 4)
    populate, calls, gate = weight_reader.populate, [], threading.Event()

    def slow_first_then_held(address: int, length: int) -> None:
        calls.append(address)
        if len(calls) == 1:
            time.sleep(0.3)  # latency: 1 chunk in 0.3 s, the other 3 would take 0.9 s at that
        elif len(calls) == 3:
            gate.wait(10)  # the third chunk waits until the test lets it go
        populate(address, length)

    monkeypatch.setattr(weight_reader, "populate", slow_first_then_held)
    reader = WeightReader(weights)
    done_waiting = _wait_ends_while_held(reader, gate, 0.2)
    assert done_waiting  # two chunks read, two left, at the second chunk's pace: within 0.2 s
    assert reader.bytes_read == reader.size


def test_the_head_comes_in_small_pieces_and_the_wait_judges_the_rate_after_it(
    tmp_path, monkeypatch
):
    """The head's pieces arrive one request at a time and the first chunk after it waits for
    the storage's latency; then the rest streams. A wait for the rest to fit 0.2 s judges by
    the rate after the head: it ends while a chunk is still held, where the rate since the
    first piece (slow head, latency included) would keep it waiting."""
    from fusedinf_cc.backends import weight_reader

    sizes = [weight_reader.HEAD_BYTES] + [weight_reader.CHUNK_BYTES] * 7
    _, _, weights = _mapped_weights(tmp_path, sizes)
    populate, calls, gate = weight_reader.populate, [], threading.Event()
    pieces = weight_reader.HEAD_BYTES // weight_reader.HEAD_PIECE_BYTES

    def slow_head_then_latency_then_fast(address: int, length: int) -> None:
        calls.append(length)
        if len(calls) <= pieces:
            time.sleep(0.05)  # the head: 1 MiB in 0.2 s
        elif len(calls) == pieces + 1:
            time.sleep(0.3)  # the first chunk after it: the storage's latency
        elif len(calls) == pieces + 4:
            gate.wait(10)  # held until the test lets it go, 4 MiB of 8 read
        populate(address, length)

    monkeypatch.setattr(weight_reader, "populate", slow_head_then_latency_then_fast)
    reader = WeightReader(weights)
    done_waiting = _wait_ends_while_held(reader, gate, 0.2)
    assert calls[:pieces] == [weight_reader.HEAD_PIECE_BYTES] * pieces
    assert set(calls[pieces:]) == {weight_reader.CHUNK_BYTES}
    assert done_waiting  # 2 MiB at once after the latency: the other 4 MiB within 0.2 s
    assert reader.bytes_read == reader.size


def test_a_read_longer_than_a_short_one_has_no_head(tmp_path, monkeypatch):
    """Its run waits for more than a head anyway: every call reads a whole chunk."""
    from fusedinf_cc.backends import weight_reader

    chunks = weight_reader.SHORT_READ_BYTES // weight_reader.CHUNK_BYTES + 1
    _, _, weights = _mapped_weights(tmp_path, [weight_reader.CHUNK_BYTES] * chunks)
    populate, calls = weight_reader.populate, []

    def counted(address: int, length: int) -> None:
        calls.append(length)
        populate(address, length)

    monkeypatch.setattr(weight_reader, "populate", counted)
    WeightReader(weights).read()
    assert calls == [weight_reader.CHUNK_BYTES] * chunks
