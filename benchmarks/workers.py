"""Benchmark: from the last vector's acceptance to an evaluated version, and where the
time goes.

Real services, as in production: a fresh PostgreSQL database (migrated), a Redis
database index, one ``celery -A worker.main worker`` process (prefork, concurrency 1)
with auto-merge on (K = number of hospitals), the registry in this process. Each of
``--hospitals`` hospitals pushes a ResNet-18 (28x28, BloodMNIST's 8 classes) vector
fine-tuned on its own real BloodMNIST images; the last push triggers the auto-merge
(weighted mean), whose version is evaluated on a 1,000-image benchmark cut from the
real test split. The phases come from the rows' own timestamps. The baseline is the
same merge and evaluation called directly in one process (no API, queue or database).

    MEDVEC_DATASETS_DIR=/path/to/medmnist PYTHONPATH=. python benchmarks/workers.py --hospitals 3

``--evaluation`` measures only the worker's evaluation (``worker.evaluate.Evaluator``: the
benchmark decoded once per process, channels-last, a measured batch size, float16 autocast
on CUDA) against a plain inference loop over the same model and images already decoded
on the device (``torch.no_grad``, float32, batch 256), and prints the ratio of their
images per second (target >= 0.9). No services are needed:

    PYTHONPATH=. python benchmarks/workers.py --evaluation --device cpu --images 1000
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient

from app.db import make_engine
from app.main import create_app
from app.schema import upgrade
from app.storage import LocalBlobStore
from medvec.data import load_npz
from medvec.evaluation import evaluate_model
from medvec.hashing import sha256_file
from medvec.merging import merge_files
from medvec.models import load_model_file
from medvec.tokens import mint_token
from tests.integration import factories
from tests.integration.services import fresh_postgres_database, fresh_redis_database
from tests.servers import WorkerProcess
from worker.celery_app import make_celery
from worker.config import WorkerSettings
from worker.queue import CeleryJobQueue

API = "/api/v1"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).astimezone(UTC).timestamp()


class Client:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.token = client, token

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}", **kw.pop("headers", {})}
        response = self.client.request(method, f"{API}{path}", headers=headers, **kw)
        response.raise_for_status()
        return response.json()

    def upload(self, path: str, file: Path, token: str | None = None, **params: Any) -> Any:
        headers = {"Content-Type": "application/octet-stream"}
        return self.call(
            "POST", path, token, content=file.read_bytes(), headers=headers, params=params
        )


def run(datasets_dir: Path, hospitals: int, work: Path) -> dict[str, float]:
    with fresh_postgres_database() as db_url, fresh_redis_database() as redis_url:
        settings = WorkerSettings(
            environment="test",
            data_dir=work / "registry",
            database_url=db_url,
            redis_url=redis_url,
            queue=f"bench-{secrets.token_hex(4)}",
            bootstrap_admin_token=mint_token(),
        )
        engine = make_engine(db_url)
        upgrade(engine)
        engine.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
        env.update(
            {
                "MEDVEC_ENVIRONMENT": "test",
                "MEDVEC_DATA_DIR": str(settings.data_dir),
                "MEDVEC_DATABASE_URL": db_url,
                "MEDVEC_REDIS_URL": redis_url,
                "MEDVEC_QUEUE": settings.queue,
                "MEDVEC_AUTO_MERGE": "true",
                "MEDVEC_AUTO_MERGE_K": str(hospitals),
            }
        )
        worker = WorkerProcess(env, work, settings.queue)
        worker.start()
        celery = make_celery(settings)
        try:
            assert settings.bootstrap_admin_token is not None
            app = create_app(settings, job_queue=CeleryJobQueue(celery, settings.queue))
            with TestClient(app) as test_client:
                api = Client(test_client, settings.bootstrap_admin_token.get_secret_value())
                return _pipeline(api, datasets_dir, hospitals, work)
        finally:
            worker.stop()
            celery.close()


def _pipeline(api: Client, datasets_dir: Path, hospitals: int, work: Path) -> dict[str, float]:
    base_path = factories.make_base(work / "base.safetensors", seed=1)
    base = api.upload("/bases", base_path, name="bench-base")
    while base["status"] == "verifying":  # a worker checks the architecture first
        time.sleep(0.2)
        base = api.call("GET", f"/bases/{base['id']}")
    bench_path = factories.make_benchmark(datasets_dir, work / "bench.npz")
    api.upload("/benchmarks", bench_path, name="bench-1000")
    vectors = []
    for index in range(hospitals):
        hospital = api.call("POST", "/hospitals", json={"name": f"h{index}"})
        token = api.call(
            "POST",
            "/tokens",
            json={"name": f"h{index}", "role": "hospital", "hospital_id": hospital["id"]},
        )["token"]
        path = factories.fine_tuned_vector(
            base_path,
            work / f"v{index}.safetensors",
            base_id=base["id"],
            base_sha256=base["sha256"],
            hospital=f"h{index}",
            data=factories.hospital_data(datasets_dir, index),
            seed=index,
        )
        vectors.append(path)
        api.upload("/vectors", path, token)
        accepted = time.time()
    evaluation, job = _wait_for_evaluation(api, base["id"])
    timings = {
        "accept -> job created (vectors.accepted task, policy)": _ts(job["created_at"]) - accepted,
        "job queued -> merge started": _ts(job["started_at"]) - _ts(job["created_at"]),
        "merge (engine, blob, version row)": _ts(job["finished_at"]) - _ts(job["started_at"]),
        "merge done -> evaluation started": _ts(evaluation["created_at"]) - _ts(job["finished_at"]),
        "evaluation: load model + benchmark": evaluation["metrics"]["seconds"]["load"],
        "evaluation: predict + metrics": evaluation["metrics"]["seconds"]["predict"],
        "evaluation: store row": _ts(evaluation["updated_at"])
        - _ts(evaluation["created_at"])
        - sum(evaluation["metrics"]["seconds"].values()),
        "TOTAL accept -> evaluated version": _ts(evaluation["updated_at"]) - accepted,
    }
    merge_s, eval_s = _baseline(base_path, vectors, bench_path, work)
    timings["baseline in-process: merge"] = merge_s
    timings["baseline in-process: evaluation"] = eval_s
    timings["baseline: same merge + evaluation in-process"] = merge_s + eval_s
    return timings


def _wait_for_evaluation(api: Client, base_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        jobs = api.call("GET", "/merges", params={"base_id": base_id})
        if jobs and jobs[0]["status"] == "failed":
            raise RuntimeError(jobs[0]["error"])
        if jobs and jobs[0]["version_id"]:
            rows = api.call("GET", f"/versions/{jobs[0]['version_id']}/evaluations")
            done = [r for r in rows if r["status"] == "completed"]
            if done:
                return done[0], jobs[0]
        time.sleep(0.2)
    raise TimeoutError("no evaluated version after 30 minutes")


def _baseline(base: Path, vectors: list[Path], bench: Path, work: Path) -> tuple[float, float]:
    """Seconds of the same merge and the same evaluation, called directly."""
    started = time.perf_counter()
    out = work / "baseline.safetensors"
    merge_files(base, vectors, out, strategy="weighted_mean")
    merged = time.perf_counter()
    model, spec = load_model_file(out)
    data = load_npz(bench, "test", in_channels=spec.in_channels, image_size=spec.image_size)
    evaluate_model(model, data, device="cpu", batch_size=256)
    return merged - started, time.perf_counter() - merged


def _plain_loop(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> float:
    """Seconds of the loop anyone would write: eval mode, no_grad, float32, softmax."""
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():
        outputs = [
            torch.softmax(model(images[i : i + batch_size]), dim=1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    assert sum(len(o) for o in outputs) == len(images)
    return time.perf_counter() - started


def evaluation(
    datasets_dir: Path, device: str, repeats: int, images: int, work: Path
) -> dict[str, float]:
    """Images per second of the worker's evaluation (cold: decoding and measuring the batch
    size; warm: what each later evaluation in the process costs) and of a plain loop."""
    from medvec.data.transforms import eval_transform
    from medvec.models import build_model
    from worker.evaluate import Evaluator, SplitRef

    spec = factories.SPEC
    bench = factories.make_benchmark(datasets_dir, work / "bench.npz", n_test=images, n_val=8)
    store = LocalBlobStore(work / "blobs")
    sha = sha256_file(bench)
    staged = store.staging_path("bench.tmp")
    shutil.copyfile(bench, staged)
    store.commit(staged, sha)
    ref = SplitRef("bench", "blood", sha, spec.num_classes, "test")
    settings = WorkerSettings(environment="test", data_dir=work, eval_device=device)
    evaluator = Evaluator(settings)
    torch.manual_seed(0)
    model = build_model(spec)

    def worker_pass() -> tuple[float, int]:
        started = time.perf_counter()
        data = evaluator.split(store, ref, "test", spec)
        metrics = evaluator.evaluate(model, data, spec)
        return time.perf_counter() - started, metrics.n

    cold, count = worker_pass()
    warm = min(worker_pass()[0] for _ in range(repeats))
    data = load_npz(bench, "test", in_channels=spec.in_channels, image_size=spec.image_size)
    target = torch.device(device)
    pixels = eval_transform(data.pixels.to(target), spec.in_channels)
    plain_model = build_model(spec).to(target)
    plain_model.load_state_dict(model.state_dict())
    _plain_loop(plain_model, pixels)  # warm-up
    plain = min(_plain_loop(plain_model, pixels) for _ in range(repeats))
    return {
        "images": count,
        "batch size (measured)": evaluator.batch_size(model, spec),
        "worker cold images/s": count / cold,
        "worker warm images/s": count / warm,
        "plain loop images/s": count / plain,
        "ratio warm worker / plain loop": plain / warm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--datasets-dir", type=Path, default=os.environ.get("MEDVEC_DATASETS_DIR"))
    parser.add_argument("--evaluation", action="store_true", help="only the evaluation ratio")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000, help="benchmark images (--evaluation)")
    args = parser.parse_args()
    if args.datasets_dir is None:
        parser.error("give --datasets-dir or set MEDVEC_DATASETS_DIR")
    if args.evaluation:
        with tempfile.TemporaryDirectory() as tmp:
            result = evaluation(
                Path(args.datasets_dir), args.device, args.repeats, args.images, Path(tmp)
            )
        print(
            f"device {args.device}, torch threads {torch.get_num_threads()}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        for name, value in result.items():
            print(f"{name:<32} {value:10.2f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        timings = run(Path(args.datasets_dir), args.hospitals, Path(tmp))
    total = timings["TOTAL accept -> evaluated version"]
    baseline = timings["baseline: same merge + evaluation in-process"]
    width = max(map(len, timings))
    for name, seconds in timings.items():
        print(f"{name:<{width}}  {seconds:8.2f} s  {100 * seconds / total:5.1f} %")
    print(f"{'ratio total / in-process baseline':<{width}}  {total / baseline:8.2f} x")


if __name__ == "__main__":
    main()
