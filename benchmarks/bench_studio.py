"""The studio's overhead: one generation through gradio_client vs the same call through the library, and the
page's first load.

Ours: the Generate tab's endpoint called with gradio_client (HTTP, the queue, the images copied for the page
and downloaded by the client). Reference: `run_generation` on a pipeline loaded as the CLI loads it, with the
same settings, in the same process and run, measured alternately (best of N). Target: ratio <= 1.05.
Both the wall time and the process's CPU time (all its threads: the web server's and the client's work
included) are reported: on a shared machine whose load swings wall times by 2x, the CPU time is what shows
the studio's own cost. torch runs one thread (OMP_NUM_THREADS=1 unless set): the generation runs in a worker
thread of the server, and a second thread's two-thread team on two loaded cores measures the load, not us.
The first load is the time until the page's Generate button exists in a headless Chromium (or, without one,
the time to fetch the page and its config over HTTP); target: under 2 s.

    python -m benchmarks.bench_studio [--quick] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import Result

PROMPT, N, STEPS = "a sticker of a happy green broccoli on a beach", 4, 20


def interleaved_best_times(fn_a, fn_b, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, cpu) of a, (wall, cpu) of b): best of `repeats`, measured alternately after one warm-up each."""
    fn_a(), fn_b()
    best = {fn_a: [float("inf")] * 2, fn_b: [float("inf")] * 2}
    for _ in range(repeats):
        for fn in (fn_a, fn_b):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[fn] = [min(best[fn][0], wall), min(best[fn][1], cpu)]
    return tuple(best[fn_a]), tuple(best[fn_b])


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_load(url: str) -> tuple[float, str]:
    """Seconds until the page is usable, and how it was measured."""
    if os.access("/usr/bin/chromium", os.X_OK) and os.access("/usr/bin/chromedriver", os.X_OK):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        profile = tempfile.mkdtemp(prefix="bench-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            t0 = time.perf_counter()
            driver.get(url)
            WebDriverWait(driver, 60, poll_frequency=0.02).until(lambda d: d.find_elements("id", "generate-button"))
            return time.perf_counter() - t0, "headless Chromium, until the Generate button exists"
        finally:
            driver.quit()
    t0 = time.perf_counter()
    for path in ("/", "/config"):
        urllib.request.urlopen(url + path, timeout=60).read()
    return time.perf_counter() - t0, "HTTP GET of the page and its config (no browser installed)"


def run(quick: bool = False, model: str | None = None) -> list[Result]:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    from conceptlab.generation.generate import GenerationConfig, run_generation
    from conceptlab.models.loading import default_model, load_pipeline
    from conceptlab.studio.app import Studio, launch

    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    studio = Studio(tmp / "ws", model=model)
    port = _port()
    app = launch(studio, port=port, block=False, quiet=True)
    url = f"http://127.0.0.1:{port}"
    try:
        load_seconds, how = first_load(url)
        client = Client(url + "/", verbose=False, download_files=str(tmp / "downloads"))
        pipe = load_pipeline(model)  # what `conceptlab generate` loads
        cfg = GenerationConfig(prompt=PROMPT, n=N, seed=0, steps=STEPS)

        def ours():
            client.predict(PROMPT, "", 0, N, STEPS, 7.5, "default", 0, 0, model or "", [], [], 1.0,
                           api_name="/generate")

        def reference():
            run_generation(pipe, cfg, tmp / "library" / str(time.perf_counter_ns()), model=model or default_model(),
                           progress=False)

        (wall_a, cpu_a), (wall_b, cpu_b) = interleaved_best_times(ours, reference, repeats=1 if quick else 5)
    finally:
        app.close()
        studio.close()
    print(f"studio first load: {load_seconds:.2f} s ({how}; target < 2 s)")
    name = f"studio generate: {N} img x {STEPS} steps"
    return [Result(f"{name}, wall", wall_a, wall_b, "s", "ratio <= 1.05"),
            Result(f"{name}, CPU", cpu_a, cpu_b, "s", "ratio <= 1.05")]


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; see the module's docstring
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--model", default=None, help="default: the shipped sticker base model")
    args = parser.parse_args()
    for result in run(quick=args.quick, model=args.model):
        print(result.line())


if __name__ == "__main__":
    main()
