"""Benchmark: the streaming merge engine against the I/O floor, load-all, and Flower.

For N vectors shaped like medvec's ResNet-50 state dict (random values, written to a
temporary directory), each method runs in a fresh subprocess that reports its
wall time and peak resident memory (``ru_maxrss``):

- ``stream_mean`` / ``stream_median`` / ``stream_trimmed_mean``: ``medvec.merging.merge_files``
  (weighted mean by samples / coordinate median / trimmed mean), writing the merged model
  file, given the base's sha256 as the worker gives it (the registry knows it), in a
  process that never imports torch;
- ``read_once``: read every file once into a reused buffer: the I/O floor;
- ``load_all_mean`` / ``load_all_median``: load every vector, then combine;
- ``flower_mean`` / ``flower_median``: Flower's ``aggregate`` / ``aggregate_median``
  on the same files loaded as lists of numpy arrays (as Flower holds client
  updates), plus adding the base and writing the result.

Flower runs under ``--flower-python`` (a separate virtual environment with flwr,
see docs/benchmarks.md) so that it never changes the project's environment.

    python benchmarks/merge.py --sizes 5,20,50 --flower-python /path/to/flwr-venv/bin/python
    python benchmarks/merge.py --sizes 2,4 --arch resnet18 --num-classes 2 --image-size 28
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MEDVEC_METHODS = [
    "read_once",
    "stream_mean",
    "stream_median",
    "stream_trimmed_mean",
    "load_all_mean",
    "load_all_median",
]
FLOWER_METHODS = ["flower_mean", "flower_median"]
READ_CHUNK = 8 * 1024 * 1024


def _peak_rss() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec on Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    """User plus system CPU time of this process, all threads: a measure of the work done
    that a busy machine's scheduling does not inflate as much as wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _import_for(method: str) -> None:
    """Import what a method needs before the clock starts (imports are not merging)."""
    if method.startswith("flower_"):
        import flwr  # noqa: F401
        import safetensors.numpy  # noqa: F401

        _flower_functions()
    elif method.startswith("stream_"):
        import medvec.merging  # noqa: F401
    elif method != "read_once":
        import safetensors.torch  # noqa: F401

        import medvec.merging  # noqa: F401
        import medvec.vectors  # noqa: F401


# -- workers (run in a fresh process each) ------------------------------------


def _vector_paths(directory: Path, n: int) -> list[Path]:
    return [directory / f"vector-{i:03d}.safetensors" for i in range(n)]


def _work_read_once(base: Path, vectors: list[Path]) -> dict[str, Any]:
    buffer = bytearray(READ_CHUNK)
    total = 0
    for path in [base, *vectors]:
        with open(path, "rb", buffering=0) as handle:
            while got := handle.readinto(buffer):
                total += got
    return {"bytes": total}


def _work_stream(strategy: str, base: Path, vectors: list[Path], out: Path) -> dict[str, Any]:
    from medvec.merging import merge_files

    sha = (base.parent / "base.sha256").read_text().strip()
    result = merge_files(base, vectors, out, strategy=strategy, base_sha256=sha)
    return {"sha256": result.sha256, "torch_imported": "torch" in sys.modules}


def _work_load_all(strategy: str, base: Path, vectors: list[Path], out: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from medvec.vectors import read_vector_metadata

    weights = [read_vector_metadata(p).num_samples for p in vectors]
    loaded = [load_file(str(p)) for p in vectors]
    merged = load_file(str(base))
    total = float(sum(weights))
    for key in loaded[0]:
        if strategy == "mean":
            delta = sum(w / total * t[key] for w, t in zip(weights, loaded, strict=True))
        else:
            stacked = torch.stack([t[key] for t in loaded]).numpy()
            delta = torch.from_numpy(np.median(stacked, axis=0))
        merged[key] = merged[key] + delta
    save_file(merged, str(out))
    return {}


def _flower_functions() -> tuple[Any, Any, str]:
    try:
        from flwr.server.strategy.aggregate import aggregate, aggregate_median

        where = "flwr.server.strategy.aggregate"
    except ImportError:  # newer layouts
        from flwr.serverapp.strategy.strategy_utils import (
            aggregate,
            aggregate_median,
        )

        where = "flwr.serverapp.strategy.strategy_utils"
    return aggregate, aggregate_median, where


def _work_flower(strategy: str, base: Path, vectors: list[Path], out: Path) -> dict[str, Any]:
    import flwr
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    aggregate, aggregate_median, where = _flower_functions()
    results = []
    for path in vectors:
        with safe_open(str(path), framework="numpy") as handle:
            samples = json.loads(handle.metadata()["medvec.vector"])["num_samples"]
        arrays = load_file(str(path))
        results.append((list(arrays.values()), samples))
    keys = list(load_file(str(vectors[0])).keys()) if vectors else []
    started = time.perf_counter()
    if strategy == "mean":
        combined = aggregate(results)
    else:
        combined = aggregate_median(results)
    aggregate_seconds = time.perf_counter() - started
    merged = load_file(str(base))
    for key, delta in zip(keys, combined, strict=True):
        merged[key] = (merged[key] + delta).astype(merged[key].dtype)
    save_file(merged, str(out))
    return {"aggregate_seconds": aggregate_seconds, "flwr": flwr.__version__, "where": where}


def run_worker(method: str, workdir: Path, n: int) -> dict[str, Any]:
    base = workdir / "base.safetensors"
    vectors = _vector_paths(workdir, n)
    out = workdir / f"out-{method}.safetensors"
    _import_for(method)
    baseline = _peak_rss()
    cpu_started = _cpu_seconds()
    started = time.perf_counter()
    if method == "read_once":
        extra = _work_read_once(base, vectors)
    elif method.startswith("stream_"):
        strategy = method.removeprefix("stream_")
        extra = _work_stream(
            "weighted_mean" if strategy == "mean" else strategy, base, vectors, out
        )
    elif method.startswith("load_all_"):
        extra = _work_load_all(method.removeprefix("load_all_"), base, vectors, out)
    elif method.startswith("flower_"):
        extra = _work_flower(method.removeprefix("flower_"), base, vectors, out)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    out.unlink(missing_ok=True)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss": _peak_rss(),
        "baseline_rss": baseline,
        **extra,
    }


# -- driver --------------------------------------------------------------------


def make_files(workdir: Path, n: int, arch: str, num_classes: int, image_size: int) -> int:
    """Write a base model file and ``n`` random vectors of its shapes; return vector bytes."""
    import torch

    from medvec.hashing import sha256_file
    from medvec.models import ModelSpec, build_model, save_model_file
    from medvec.vectors import VectorMetadata, floating_keys, save_vector

    spec = ModelSpec(arch=arch, num_classes=num_classes, in_channels=3, image_size=image_size)
    torch.manual_seed(0)
    state = build_model(spec).state_dict()
    base = workdir / "base.safetensors"
    if not base.exists():  # a kept workdir is reused: its vectors belong to this base
        save_model_file(base, state, spec, {"name": "bench base"})
    sha = sha256_file(base)
    (workdir / "base.sha256").write_text(sha)
    keys = floating_keys(state)
    gen = torch.Generator().manual_seed(1)
    for i, path in enumerate(_vector_paths(workdir, n)):
        if path.exists():
            continue
        tensors = {k: 1e-3 * torch.randn(state[k].shape, generator=gen) for k in keys}
        meta = VectorMetadata(
            base_id=sha, base_sha256=sha, hospital=f"h{i}", num_samples=100 + 7 * i, spec=spec
        )
        save_vector(path, tensors, meta)
    return _vector_paths(workdir, 1)[0].stat().st_size


def _measure(python: str, method: str, workdir: Path, n: int) -> dict[str, Any]:
    cmd = [python, __file__, "--worker", method, "--workdir", str(workdir), "--n", str(n)]
    env = dict(os.environ)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mem_available() -> int:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _fits(method: str, n: int, vector_bytes: int) -> bool:
    factor = {"load_all": 1.3, "flower": 2.3}.get(method.rsplit("_", 1)[0], 0.0)
    return factor * n * vector_bytes < 0.85 * _mem_available()


def _flower_python(requested: str | None) -> str | None:
    candidate = requested or sys.executable
    probe = subprocess.run(
        [candidate, "-c", "import flwr, safetensors"], capture_output=True, check=False
    )
    return candidate if probe.returncode == 0 else None


def _row(method: str, r: dict[str, Any]) -> str:
    if "error" in r or "skipped" in r:
        return f"  {method:<16} {r.get('error') or r.get('skipped')}"
    work = (r["peak_rss"] - r["baseline_rss"]) / 2**20
    agg = f"  (aggregate alone {r['aggregate_seconds']:.2f} s)" if "aggregate_seconds" in r else ""
    cpu = f"  cpu {r['cpu_seconds']:6.2f} s" if "cpu_seconds" in r else ""
    return (
        f"  {method:<19} {r['seconds']:8.2f} s{cpu}  peak RSS {r['peak_rss'] / 2**20:8.0f} MiB"
        f"  (+{work:.0f} MiB over start){agg}"
    )


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or key not in a or key not in b or not b[key]:
        return None
    return float(a[key]) / float(b[key])


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def report(results: dict[int, dict[str, dict[str, Any]]]) -> None:
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print("\nratios")
    for n, by in results.items():
        mean = by.get("stream_mean")
        lines = {
            "stream_mean/read_once": _ratio(mean, by.get("read_once"), "seconds"),
            "stream_mean/read_once cpu": _ratio(mean, by.get("read_once"), "cpu_seconds"),
            "stream_median/stream_mean": _ratio(by.get("stream_median"), mean, "seconds"),
            "stream_trimmed_mean/stream_mean": _ratio(
                by.get("stream_trimmed_mean"), mean, "seconds"
            ),
            "load_all_mean/stream_mean": _ratio(by.get("load_all_mean"), mean, "seconds"),
            "flower_mean/stream_mean": _ratio(by.get("flower_mean"), mean, "seconds"),
            "stream_mean/flower_mean peak RSS": _ratio(mean, by.get("flower_mean"), "peak_rss"),
        }
        for label, value in lines.items():
            print(f"{label} N={n}: {fmt(value)}")
    sizes = sorted(results)
    if len(sizes) > 1:
        low, high = results[sizes[0]].get("stream_mean"), results[sizes[-1]].get("stream_mean")
        print(
            f"stream_mean peak RSS N={sizes[-1]}/N={sizes[0]}: "
            f"{fmt(_ratio(high, low, 'peak_rss'))} (1.00 = flat in N)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="5,20,50", help="comma-separated numbers of vectors")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--flower-python", default=None, help="python of a venv with flwr")
    parser.add_argument("--methods", default=",".join(MEDVEC_METHODS + FLOWER_METHODS))
    parser.add_argument("--json-out", type=Path, default=None, help="also write results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.workdir, args.n)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medvec-merge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    flower = _flower_python(args.flower_python)
    if flower is None and any(m in FLOWER_METHODS for m in methods):
        print("flwr not importable: Flower runs skipped (see docs/benchmarks.md, --flower-python)")
    print(f"writing {max(sizes)} {args.arch} vectors to {workdir} ...", flush=True)
    vector_bytes = make_files(workdir, max(sizes), args.arch, args.num_classes, args.image_size)
    print(f"one vector: {vector_bytes / 2**20:.1f} MiB; cpu count {os.cpu_count()}")
    print(f"load average at start (1, 5, 15 min): {_load()}", flush=True)
    results: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        _measure(sys.executable, "read_once", workdir, max(sizes))  # warm the page cache
        for n in sizes:
            print(f"\nN={n}", flush=True)
            results[n] = {}
            for method in methods:
                python = flower if method in FLOWER_METHODS else sys.executable
                if python is None:
                    result: dict[str, Any] = {"skipped": "flwr not installed"}
                elif not _fits(method, n, vector_bytes):
                    result = {"skipped": "not enough free memory on this machine"}
                else:
                    result = _measure(python, method, workdir, n)
                results[n][method] = result
                print(_row(method, result), flush=True)
        report(results)
        print(f"load average at end (1, 5, 15 min): {_load()}")
        if args.json_out:
            args.json_out.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
