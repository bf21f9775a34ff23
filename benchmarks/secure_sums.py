"""Benchmark: a secure merge's sum of shares after one hospital's update, moved vs rebuilt.

N shares (one per hospital) of a vector of ``--coords`` float coordinates are summed once
into a running sum (``medvec.secure.running.advance_sum``); hospital 0 then pushes a new
vector (a new share). Two ways to the sum over the new current set, each server's work
in a secure merge:

- ``moved``: ``advance_sum`` subtracts the superseded share and adds the new one
  (reads the running sum and two shares, whatever N, writes the new sum and links it
  as the running file);
- ``rebuilt``: ``sum_shares`` over the N current shares (what each server did before).

Both run in this process after the page cache is warmed, best of ``--repeat`` runs; the
two files must be byte for byte the same (sha256). The last lines are
``speedup N=<n>: <x>``: the rebuild's time over the move's.

    python benchmarks/secure_sums.py --sizes 10,30
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _best(repeat: int, run: Callable[[], Any], setup: Callable[[], Any] = lambda: None) -> float:
    times = []
    for _ in range(repeat):
        setup()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _share(folder: Path, name: str, coords: int, pair: str) -> Path:
    import torch

    from medvec.secure import write_shares
    from medvec.vectors import VectorMetadata

    meta = VectorMetadata(base_id="b", base_sha256="0" * 64, hospital=name, num_samples=1)
    layers = 8
    tensors = {f"layer{i}.weight": torch.randn(coords // layers) * 0.01 for i in range(layers)}
    a, b = folder / f"{name}-{pair}.a", folder / f"{name}-{pair}.b"
    _, share_b = write_shares(tensors, meta, a, b, pair_id=pair, weight=1)
    (folder / f"{name}-{pair}.a").unlink()
    return share_b


def run(n: int, coords: int, repeat: int, folder: Path) -> float:
    from medvec.secure import sum_shares
    from medvec.secure.running import advance_sum

    pairs = [secrets.token_hex(16) for _ in range(n)]
    paths = {p: _share(folder, f"h{i}", coords, p) for i, p in enumerate(pairs)}
    new_pair = secrets.token_hex(16)
    paths[new_pair] = _share(folder, "h0", coords, new_pair)
    before = set(pairs)
    after = {*pairs[1:], new_pair}
    running = folder / "running.safetensors"
    keep = folder / "before.safetensors"
    advance_sum(running, before, paths.get, keep)
    for path in [*paths.values(), keep]:
        _sha(path)  # warm the page cache

    def restore() -> None:
        """The running sum as it was before the update (a file of its own, not a link)."""
        running.unlink(missing_ok=True)
        shutil.copyfile(keep, running)

    def moved() -> None:
        update = advance_sum(running, after, paths.get, folder / "moved.safetensors")
        assert update.moved and update.shares_read == 2, update

    order = sorted(after)

    def rebuilt() -> None:
        sum_shares([paths[p] for p in order], folder / "rebuilt.safetensors")

    t_moved = _best(repeat, moved, restore)
    t_rebuilt = _best(repeat, rebuilt)
    same = _sha(folder / "moved.safetensors") == _sha(folder / "rebuilt.safetensors")
    assert same, "a moved sum must be byte for byte the sum from scratch"
    mib = coords * 8 / 2**20
    print(  # noqa: T201
        f"N={n}: share {mib:.1f} MiB, moved {t_moved:.2f} s, rebuilt {t_rebuilt:.2f} s, same bytes"
    )
    return t_rebuilt / t_moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,30", help="comma-separated N")
    parser.add_argument("--coords", type=int, default=2_000_000, help="coordinates per vector")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    speedups = {}
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            speedups[n] = run(n, args.coords, args.repeat, Path(tmp))
    for n, speedup in speedups.items():
        print(f"speedup N={n}: {speedup:.1f}")  # noqa: T201


if __name__ == "__main__":
    main()
