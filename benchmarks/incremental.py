"""Benchmark: one hospital's update at N vectors, through the running sums vs a full merge.

For N vectors shaped like medvec's ResNet-50 state dict (the files ``benchmarks/merge.py``
writes), hospital 0 pushes a new vector. Two ways to the new weighted-mean version:

- ``sums``: ``medvec.merging.sums.update_sums`` subtracts hospital 0's old share, adds the
  new one and writes the new sums and the merged model in one pass (reads two vectors,
  the sums and the base, whatever N); also timed apart: the sums update alone (what the
  registry does when the vector is accepted) and the version from the updated sums
  alone (what a merge request then does: reads the sums and the base);
- ``full``: ``medvec.merging.merge_files`` over the N current vectors (the streaming
  engine, as every re-merge did before).

Both run in this process after the page cache is warmed (with ``--cold``, after it is
dropped before every run, so that every file comes from the disk), best of ``--repeat``
runs; the merged files are compared (largest difference relative to each tensor's
largest magnitude, must be below 1e-5). Also timed: ``floor``, copying the base into a new
model file through the same writer (hashed and fsynced, as every version is written).
Any way to a new version writes such a file, so ``full / floor`` bounds the speedup
that any implementation of the sums could reach on this machine. The last lines are
``speedup N=<n>: <x>``: the full merge's time over the one-pass update's (new sums and
new version).

    python benchmarks/incremental.py --sizes 10,50
    python benchmarks/incremental.py --sizes 10,50 --cold   # as root, on Linux
    python benchmarks/incremental.py --sizes 2,4 --arch resnet18 --num-classes 2 --image-size 28
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from merge import _vector_paths, make_files  # the sibling script: it writes the same files

TOLERANCE = 1e-5


def _read_all(paths: list[Path]) -> None:
    """Read every file once so that both methods start from a warm page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(8 * 1024 * 1024):
                pass


def _drop_page_cache() -> None:
    """Write dirty pages back and drop the page cache (Linux, as root), so that the next
    run reads every file from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        raise SystemExit(f"--cold needs root on Linux to drop the page cache: {exc}") from exc


def _best(repeat: int, run: Callable[[], Any], cold: bool = False) -> float:
    times = []
    for _ in range(repeat):
        if cold:
            _drop_page_cache()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _relative_difference(a: Path, b: Path) -> float:
    from medvec.vectors.lazy import LazyTensorReader

    worst = 0.0
    with LazyTensorReader(a) as left, LazyTensorReader(b) as right:
        for name in right.keys():
            x, y = left.read(name, copy=True).double(), right.read(name).double()
            if not y.numel():
                continue
            scale = max(float(y.abs().max()), 1e-12)
            worst = max(worst, float((x - y).abs().max()) / scale)
    return worst


def _copy_through_writer(source: Path, out: Path) -> None:
    """Write ``source``'s tensors to ``out`` as a version is written: hashed, fsynced, in
    the chunks the merge engine and the sums write."""
    from medvec.merging.sums import CHUNK
    from medvec.vectors.arrays import ArrayReader
    from medvec.vectors.writer import SafetensorsWriter

    with ArrayReader(source) as reader:
        tensors = list(reader.header.tensors.values())
        layout = [(t.name, t.dtype_name, t.shape) for t in tensors]
        with SafetensorsWriter(out, layout, reader.metadata) as writer:
            for info in tensors:
                array = reader.read_array(info.name).reshape(-1)
                for start in range(0, array.size, CHUNK):
                    writer.write(info.name, array[start : start + CHUNK])
            writer.commit()


def measure(workdir: Path, n: int, repeat: int, cold: bool) -> dict[str, float]:
    """Seconds to the new version through the sums and by a full merge, at ``n`` vectors."""
    from medvec.hashing import sha256_file
    from medvec.merging import merge_files
    from medvec.merging.sums import (
        Share,
        build_sums,
        merge_from_sums,
        read_sums_header,
        update_sums,
    )
    from medvec.vectors import read_vector_metadata

    vectors = _vector_paths(workdir, n + 1)
    current, new = vectors[:n], vectors[n]  # hospital 0 replaces its vector by ``new``
    weight = {p: float(read_vector_metadata(p).num_samples) for p in vectors}
    base = workdir / "base.safetensors"
    base_sha256 = sha256_file(base)  # the registry knows it: neither method hashes the base
    shares = [Share(f"h{i}", p, weight[p]) for i, p in enumerate(current)]
    sums = workdir / f"sums-{n}.safetensors"
    build_sums(
        base, shares, sums, base_sha256=base_sha256
    )  # the registry keeps these up to date as vectors arrive
    assert read_sums_header(sums).total_weight == sum(weight[p] for p in current)
    after = [new, *current[1:]]
    _read_all([base, sums, *vectors])

    through_sums = workdir / f"through-sums-{n}.safetensors"
    from_sums = workdir / f"from-sums-{n}.safetensors"
    full = workdir / f"full-{n}.safetensors"
    updated = workdir / f"sums-{n}-next.safetensors"
    change = {"remove": [shares[0]], "add": [Share("h0-new", new, weight[new])]}

    def update_only() -> None:  # what the registry does when the vector is accepted
        update_sums(base, sums, updated, base_sha256=base_sha256, **change)  # type: ignore[arg-type]

    def version_only() -> None:  # what a merge request then does
        merge_from_sums(base, updated, from_sums, base_sha256=base_sha256)

    def fused() -> None:  # both in one pass
        update_sums(
            base,
            sums,
            updated,
            merged_path=through_sums,
            base_sha256=base_sha256,
            **change,  # type: ignore[arg-type]
        )

    def by_full_merge() -> None:
        merge_files(
            base,
            after,
            full,
            strategy="weighted_mean",
            weights=[weight[p] for p in after],
            base_sha256=base_sha256,
        )

    def floor() -> None:
        _copy_through_writer(base, workdir / "floor.safetensors")

    seconds = {
        name: _best(repeat, run, cold)
        for name, run in [
            ("floor", floor),
            ("update", update_only),
            ("version", version_only),
            ("sums", fused),
            ("full", by_full_merge),
        ]
    }
    difference = max(
        _relative_difference(through_sums, full), _relative_difference(from_sums, full)
    )
    return {**seconds, "difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10,50", help="comma-separated numbers of vectors")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=2, help="runs per method; best is kept")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before every timed run (root): every file read from disk",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medvec-incremental-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"writing {max(sizes) + 1} {args.arch} vectors ...", flush=True)
    vector_bytes = make_files(workdir, max(sizes) + 1, args.arch, args.num_classes, args.image_size)
    print(f"one vector: {vector_bytes / 2**20:.1f} MiB")
    results: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            results[n] = measure(workdir, n, args.repeat, args.cold)
            r = results[n]
            print(
                f"N={n:<3} sums update {r['update']:6.2f} s + version {r['version']:6.2f} s; "
                f"both in one pass {r['sums']:6.2f} s; full merge {r['full']:6.2f} s; "
                f"writing a version alone {r['floor']:6.2f} s; "
                f"max relative difference {r['difference']:.1e}",
                flush=True,
            )
            if not r["difference"] < TOLERANCE:
                raise SystemExit(f"N={n}: the merged files differ by {r['difference']:.2e}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for n in sizes:
        r = results[n]
        print(f"version from current sums N={n}: {r['full'] / r['version']:.1f}x")
    for n in sizes:  # no way to a new version is faster than writing it: the bound
        r = results[n]
        print(f"bound N={n}: full / writing a version alone = {r['full'] / r['floor']:.1f}x")
    for n in sizes:  # one hospital's whole update: new sums and the new version, one pass
        print(f"speedup N={n}: {results[n]['full'] / results[n]['sums']:.1f}")


if __name__ == "__main__":
    main()
