"""Screenshots of every console page, from a real run: ``medvec demo --quick`` (real
MedMNIST hospitals, merges and generations), then the registry it left is served again
and each page is captured by headless Chromium (the distribution's ``chromium`` and
``chromium-driver``), written as small palette PNGs. Before the captures, two new
hospitals push one of the demo's real vectors boosted (x6 and x8), which the registry's
worker screens and quarantines; one is released and the other hospital removed through
the console's own buttons, and a worker computes the production version's
contributions.

    python docs/tools/console_screenshots.py --out docs/img [--demo-output DIR]

``--demo-output`` reuses a finished demo's folder instead of running one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from hospital_cli.client import RegistryClient
from hospital_cli.demo.server import embedded_registry, server_command
from hospital_cli.errors import ApiError
from medvec.hashing import sha256_file
from medvec.vectors import load_vector, save_vector

WIDTH = 1280
MAX_HEIGHT = 2400
COLOURS = 64
OUTLIER_SCALES = {"st-elsewhere": 6.0, "north-clinic": 8.0}
"""New hospitals and how much each boosts a demo vector: past the norm rule's 3x median."""
LINEAR = ("weighted_mean", "task_arithmetic")
"""Strategies whose versions have per-hospital contributions."""
WAIT_S = 600
WINDOW_CHROME = 140
"""What the window's height holds beyond the page (headless Chromium still has some)."""
BOTTOM_OF_CONTENT = (
    "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom) + 16"
)


def run_demo(output: Path) -> None:
    command = [sys.executable, "-m", "hospital_cli.main", "demo", "--quick", "-o", str(output)]
    subprocess.run(command, check=True)


def admin_token(registry_dir: Path) -> str:
    """A fresh admin token stored in the demo's registry (``medvec-server create-admin-token``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
    env["MEDVEC_DATA_DIR"] = str(registry_dir)
    done = subprocess.run(
        [*server_command(), "create-admin-token", "--name", "screenshots"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDTH},900")
    driver = shutil.which("chromedriver") or "chromedriver"
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.implicitly_wait(20)
    return chrome


def capture(chrome: webdriver.Chrome, path: Path) -> None:
    """The whole page (up to ``MAX_HEIGHT``), reduced to a palette PNG."""
    for _ in range(2):  # the layout settles at the new size, then is measured again
        height = int(chrome.execute_script(BOTTOM_OF_CONTENT))
        chrome.set_window_size(WIDTH, min(height, MAX_HEIGHT) + WINDOW_CHROME)
    raw = path.with_suffix(".raw.png")
    chrome.save_screenshot(str(raw))
    with Image.open(raw) as image:
        image.convert("RGB").quantize(COLOURS).save(path, optimize=True)
    raw.unlink()
    print(f"{path} ({path.stat().st_size // 1024} KiB)")


def capture_element(chrome: webdriver.Chrome, css: str, path: Path) -> None:
    """One section of the page, reduced to a palette PNG."""
    raw = path.with_suffix(".raw.png")
    chrome.find_element(By.CSS_SELECTOR, css).screenshot(str(raw))
    with Image.open(raw) as image:
        image.convert("RGB").quantize(COLOURS).save(path, optimize=True)
    raw.unlink()
    print(f"{path} ({path.stat().st_size // 1024} KiB)")


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (found := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(2)
    return found


def current_vector_file(admin: RegistryClient, demo: Path) -> Path:
    """A demo hospital's vector file that is validated for the current base."""
    base_id = admin.get_base("current")["id"]
    wanted = {v["sha256"] for v in admin.list_vectors(base_id=base_id, status="validated")}
    for path in sorted((demo / "hospitals").rglob("*.safetensors")):
        if sha256_file(path) in wanted:
            return path
    raise SystemExit("no validated vector of the current base found in the demo's folders")


def push_outliers(admin: RegistryClient, url: str, demo: Path, work: Path) -> list[Any]:
    """Each new hospital of ``OUTLIER_SCALES`` pushes the boosted vector; once screened."""
    tensors, metadata = load_vector(current_vector_file(admin, demo))
    pushed = []
    for name, scale in OUTLIER_SCALES.items():
        hospital = admin.create_hospital(name)
        secret = admin.create_token(f"{name}-push", "hospital", hospital["id"])["token"]
        file = save_vector(
            work / f"{name}.safetensors",
            {k: v * scale for k, v in tensors.items()},
            metadata.model_copy(update={"hospital": name}),
        )
        with RegistryClient(url, secret) as client:
            pushed.append(client.push_vector(file))
    return [wait_for(f"screening of {v['id']}", partial(screened, admin, v["id"])) for v in pushed]


def screened(admin: RegistryClient, vector_id: str) -> Any:
    vector = admin.get_vector(vector_id)
    return vector if vector.get("screened_at") else None


def contributions_of(admin: RegistryClient, version_id: str) -> Any:
    try:
        return admin.contributions(version_id)
    except ApiError:
        return None


def sign_in(chrome: webdriver.Chrome, url: str, token: str) -> None:
    chrome.delete_all_cookies()
    chrome.get(f"{url}/console/login")
    chrome.find_element(By.ID, "token").send_keys(token)
    chrome.find_element(By.ID, "sign-in").click()
    chrome.find_element(By.ID, "logout")


def screenshots(url: str, token: str, out: Path, demo: Path) -> None:
    with RegistryClient(url, token) as admin:
        hospitals = admin.list_hospitals()
        versions = admin.list_versions()
        first = str(hospitals[0]["id"])
        admin.set_privacy_budget(first, 8.0, 1e-5)
        hospital_token = admin.create_token("console-screenshot", "hospital", first)["token"]
        production = next((v for v in versions if v["status"] == "production"), versions[0])
        linear = [v for v in versions if v["strategy"] in LINEAR]
        measured = production if production["strategy"] in LINEAR else linear[0]
        admin.request_contributions(measured["id"])
        released, held = push_outliers(admin, url, demo, Path(tempfile.mkdtemp()))
        wait_for("contributions", lambda: contributions_of(admin, measured["id"]))
    chrome = browser()
    try:
        chrome.get(f"{url}/console/login")
        capture(chrome, out / "console-login.png")
        sign_in(chrome, url, token)
        capture(chrome, out / "console-overview.png")
        chrome.get(f"{url}/console/versions?sort=accuracy&order=desc")
        capture(chrome, out / "console-versions.png")
        chrome.get(f"{url}/console/versions/{production['id']}")
        capture(chrome, out / "console-version.png")
        chrome.get(f"{url}/console/versions/{measured['id']}")
        capture_element(chrome, "#panel-contributions", out / "console-contributions.png")
        chrome.get(f"{url}/console/hospitals")
        chrome.find_element(By.ID, "token-name").send_keys("st-marys-ward-7")
        Select(chrome.find_element(By.ID, "token-hospital")).select_by_value(first)
        chrome.find_element(By.CSS_SELECTOR, "#create-token button").click()
        chrome.find_element(By.ID, "new-token-secret")
        capture(chrome, out / "console-hospitals.png")
        chrome.find_element(By.CSS_SELECTOR, f"#quarantine-{released['id']} button.release").click()
        chrome.find_element(By.ID, "notice")
        capture(chrome, out / "console-quarantine-released.png")
        chrome.get(f"{url}/console/hospitals/{held['hospital_id']}")
        capture(chrome, out / "console-hospital-admin.png")
        chrome.get(f"{url}/console/hospitals/{released['hospital_id']}")
        chrome.find_element(By.ID, "remove-confirm").send_keys("st-elsewhere")
        chrome.find_element(By.ID, "remove-reason").send_keys("left the consortium")
        chrome.find_element(By.ID, "remove").click()
        chrome.find_element(By.ID, "removed")
        capture(chrome, out / "console-hospital-removed.png")
        chrome.get(f"{url}/console/jobs")
        capture(chrome, out / "console-jobs.png")
        sign_in(chrome, url, hospital_token)
        capture(chrome, out / "console-hospital.png")
    finally:
        chrome.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--demo-output", type=Path, default=None)
    args = parser.parse_args()
    demo = args.demo_output or Path(tempfile.mkdtemp(prefix="medvec-console-")) / "demo"
    if args.demo_output is None:
        run_demo(demo)
    # a copy, so that the demo's registry stays as the run left it and reruns start clean
    registry_dir = Path(tempfile.mkdtemp(prefix="medvec-console-registry-")) / "registry"
    shutil.copytree(demo / "registry", registry_dir)
    token = admin_token(registry_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    with embedded_registry(registry_dir, auto_merge_k=1000, admin_token=token) as server:
        screenshots(server.url, token, args.out, demo)


if __name__ == "__main__":
    main()
