"""S3 read benchmark: how a worker should read blobs from S3 for a merge.

Starts moto's S3 server (``moto_server``, from ``moto[server]``) on loopback unless
``--endpoint`` names one, stores a ResNet-18 base and ``--vectors`` data vectors in a
bucket through ``app.s3.S3BlobStore``, then merges them (weighted mean) three ways:

- **cache, cold**: ``local_path`` downloads every blob once into the local cache
  (streamed, sha256 checked), then the streaming engine merges the local files;
- **cache, warm**: the same merge again, the files already cached (what every later
  merge of the same base and vectors costs);
- **ranged GETs**: no local files; every tensor of the base and of every vector is
  fetched with its own HTTP range request and merged in memory, tensor by tensor.

It prints the seconds and the ratios against the cold cache in the same run.

    python benchmarks/s3_reads.py --vectors 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.s3 import S3BlobStore
from hospital_cli.demo.server import free_port
from medvec.hashing import sha256_file
from medvec.merging import merge_files
from medvec.models import ModelSpec, build_model, save_model_file
from medvec.vectors import VectorMetadata, save_vector

SPEC = ModelSpec(arch="resnet18", num_classes=8, in_channels=3, image_size=28)
DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64}


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    process = subprocess.Popen(
        [command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def make_files(folder: Path, count: int) -> tuple[Path, list[Path]]:
    torch.manual_seed(0)
    model = build_model(SPEC)
    base = save_model_file(folder / "base.safetensors", model, SPEC)
    digest = sha256_file(base)
    vectors = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        tau = {
            k: 1e-3 * torch.randn(v.shape, generator=generator)
            for k, v in model.state_dict().items()
            if v.is_floating_point()
        }
        meta = VectorMetadata(
            base_id=digest, base_sha256=digest, hospital=f"h{index}", num_samples=10, spec=SPEC
        )
        vectors.append(save_vector(folder / f"v{index}.safetensors", tau, meta))
    return base, vectors


def store_blob(store: S3BlobStore, path: Path) -> str:
    staged = store.staging_path()
    shutil.copyfile(path, staged)
    return store.commit(staged, sha256_file(path)).sha256


def ranged_header(store: S3BlobStore, sha256: str) -> tuple[int, dict[str, Any]]:
    key = store.key(sha256)
    head = store.client.get_object(Bucket=store.bucket, Key=key, Range="bytes=0-7")
    length = int.from_bytes(head["Body"].read(), "little")
    raw = store.client.get_object(Bucket=store.bucket, Key=key, Range=f"bytes=8-{7 + length}")
    header = json.loads(raw["Body"].read())
    header.pop("__metadata__", None)
    return 8 + length, header


def ranged_tensor(store: S3BlobStore, sha256: str, start: int, entry: dict[str, Any]) -> Any:
    lo, hi = entry["data_offsets"]
    answer = store.client.get_object(
        Bucket=store.bucket, Key=store.key(sha256), Range=f"bytes={start + lo}-{start + hi - 1}"
    )
    return np.frombuffer(answer["Body"].read(), dtype=DTYPES[entry["dtype"]])


def merge_ranged(store: S3BlobStore, base: str, vectors: list[str]) -> int:
    """Weighted mean, every tensor of every file by its own range request; requests made."""
    base_start, base_header = ranged_header(store, base)
    headers = [ranged_header(store, v) for v in vectors]
    requests = 2 * (1 + len(vectors))
    for name, entry in base_header.items():
        merged = ranged_tensor(store, base, base_start, entry).astype(np.float64)
        requests += 1
        if entry["dtype"] != "F32":
            continue
        deltas = [
            ranged_tensor(store, v, s, h[name]) for v, (s, h) in zip(vectors, headers, strict=True)
        ]
        requests += len(deltas)
        merged += np.mean(deltas, axis=0)
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--endpoint", help="an S3 endpoint (default: start moto_server)")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    process, endpoint = (None, args.endpoint) if args.endpoint else start_moto()
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        bucket = f"bench-{os.getpid()}"
        client.create_bucket(Bucket=bucket)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            base_file, vector_files = make_files(root, args.vectors)
            size = sum(p.stat().st_size for p in [base_file, *vector_files])
            loader = S3BlobStore(client, bucket, "bench/", root / "loader")
            base = store_blob(loader, base_file)
            vectors = [store_blob(loader, p) for p in vector_files]
            timings: dict[str, list[float]] = {"cold": [], "warm": [], "ranged": []}
            requests = 0
            for repeat in range(args.repeats):
                store = S3BlobStore(client, bucket, "bench/", root / f"worker-{repeat}")
                for label in ("cold", "warm"):
                    started = time.perf_counter()
                    paths = [store.local_path(s) for s in vectors]
                    out = root / f"merged-{repeat}-{label}.safetensors"
                    merge_files(store.local_path(base), paths, out, strategy="weighted_mean")
                    timings[label].append(time.perf_counter() - started)
                started = time.perf_counter()
                requests = merge_ranged(store, base, vectors)
                timings["ranged"].append(time.perf_counter() - started)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
    best = {label: min(values) for label, values in timings.items()}
    print(f"base + {args.vectors} vectors, {size / 2**20:.1f} MiB in S3; best of {args.repeats}")
    print(f"  cache, cold   {best['cold']:7.2f} s   1.00x")
    print(f"  cache, warm   {best['warm']:7.2f} s   {best['warm'] / best['cold']:.2f}x")
    print(
        f"  ranged GETs   {best['ranged']:7.2f} s   {best['ranged'] / best['cold']:.2f}x"
        f"   ({requests} requests)"
    )


if __name__ == "__main__":
    main()
