"""The studio's overhead: one generation through gradio_client vs the same call through the library, and the
page's first load vs a one-button Gradio page (Gradio's own floor).

Generation. Ours: the Generate tab's endpoint called with gradio_client (HTTP, the queue, the images copied
for the page and downloaded by the client). Reference: `run_generation` on a pipeline loaded as the CLI loads
it, same settings, same process and run, measured alternately after one warm-up each. Every sample is kept;
the median ratio is reported with the spread of the per-pair ratios (each pair ran back to back, so a load
swing hits both), wall time and the process's CPU time (all its threads: the web server's and the client's
work). Target: ratio <= 1.05. torch runs one thread (OMP_NUM_THREADS=1 unless set): the generation runs in a
worker thread of the server, and a two-thread team on two loaded cores would measure the load, not us.

First load. Seconds from navigation until the Generate button exists in a headless Chromium with a fresh
profile (cold cache), and again on a reload (warm cache), for the studio and for a one-button Gradio page
served by the same process with the same settings, alternately. The difference is what our page adds; the
floor is Gradio's own bundle. Where the time went, from the browser's own timings: how long the server took to
start answering each file (median over the page's ~100 files; the studio answers Gradio's frontend files from
memory, `conceptlab.studio.assets`) and how long the page's scripts ran (Chrome's ScriptDuration).
Gradio's floor for the generation: an endpoint that only returns the same N
images as a gallery, timed through gradio_client; the studio's overhead over the library is compared with it.
Target: first load under 2 s. The load average is printed before and after: on a shared
machine it decides the figures more than anything measured.

    python -m benchmarks.bench_studio [--quick] [--model DIR] [--repeats N] [--loads N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import Result

TITLE = "The studio"  # its table on docs/results/benchmarks.md (benchmarks/record.py)
PROMPT, N, STEPS = "a sticker of a happy green broccoli on a beach", 4, 20
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def interleaved_samples(fn_a, fn_b, repeats: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Every (wall, cpu) of a and of b, measured alternately after one warm-up each."""
    fn_a(), fn_b()
    samples = {fn_a: [], fn_b: []}
    for _ in range(repeats):
        for fn in (fn_a, fn_b):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            samples[fn].append((time.perf_counter() - wall, time.process_time() - cpu))
    return samples[fn_a], samples[fn_b]


def spread(values: list[float]) -> str:
    """'median (min-max)' of a list of numbers."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,1400", f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _until_button(driver, url: str) -> dict:
    """Seconds until the Generate button exists, and where the time went (from the browser's own timings)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_cdp_cmd("Performance.enable", {})
    t0 = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, 120, poll_frequency=0.02).until(lambda d: d.find_elements("id", "generate-button"))
    total = time.perf_counter() - t0
    nav = driver.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
    files = driver.execute_script("return performance.getEntriesByType('resource')"
                                  ".filter(e => e.requestStart > 0).map(e => e.responseStart - e.requestStart)")
    metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    return {"total": total, "html": nav["responseEnd"] / 1e3, "dom": nav["domContentLoadedEventEnd"] / 1e3,
            "resources": len(files), "server_wait": statistics.median(files) / 1e3 if files else 0.0,
            "script": metrics.get("ScriptDuration", 0.0)}


def first_loads(urls: dict[str, str], loads: int) -> dict[str, dict[str, list]]:
    """Per page: cold loads (fresh browser profile) and warm loads (a reload), alternating between pages."""
    keys = ("cold", "warm", "html", "dom", "resources", "server_wait", "script")
    out = {name: {k: [] for k in keys} for name in urls}
    for _ in range(loads):
        for name, url in urls.items():
            driver = _driver()
            try:
                cold = _until_button(driver, url)
                driver.get("about:blank")
                warm = _until_button(driver, url)
            finally:
                driver.quit()
            row = out[name]
            row["cold"].append(cold["total"]), row["warm"].append(warm["total"])
            for k in keys[2:]:
                row[k].append(cold[k])
    return out


def floor_page(port: int):
    """A one-button Gradio page launched with the studio's settings: the least any Gradio page costs."""
    import gradio as gr

    with gr.Blocks(title="floor", analytics_enabled=False) as app:
        gr.Button("Generate", elem_id="generate-button")
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
               theme=theme, footer_links=[])
    return app


def gallery_floor(port: int, paths: list[str]):
    """A Gradio endpoint that only returns `paths` as a captioned gallery: what Gradio and gradio_client cost to
    hand N images back (postprocess into its cache, the queue's events, the client's downloads), with no work."""
    import gradio as gr

    with gr.Blocks(title="gallery floor", analytics_enabled=False) as app:
        gallery, button = gr.Gallery(), gr.Button()
        button.click(lambda: [(p, "seed") for p in paths], None, gallery, api_name="gallery")
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    return app


def page_build_seconds(url: str, repeats: int = 5) -> list[float]:
    """The server's side of a load: fetching the page (its config inlined) over HTTP."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        urllib.request.urlopen(url, timeout=60).read()
        times.append(time.perf_counter() - t0)
    return times


def run(quick: bool = False, model: str | None = None, repeats: int = 9, loads: int = 5) -> list[Result]:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    from conceptlab.generation.generate import GenerationConfig, run_generation
    from conceptlab.models.loading import default_model, load_pipeline
    from conceptlab.studio.app import Studio, launch

    repeats, loads = (1, 1) if quick else (repeats, loads)
    print(f"load average before: {loadavg()} ({os.cpu_count()} CPUs)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    studio = Studio(tmp / "ws", model=model)
    port, floor_port = _port(), _port()
    app, floor = launch(studio, port=port, block=False, quiet=True), floor_page(floor_port)
    url = f"http://127.0.0.1:{port}/"
    results = []
    try:
        build = page_build_seconds(url)
        print(f"server side of a load (GET / with its config): {spread(build)} s")
        if os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK):
            pages = first_loads({"studio": url, "floor": f"http://127.0.0.1:{floor_port}/"}, loads)
            for name, row in pages.items():
                print(f"first load, {name:6s}: cold {spread(row['cold'])} s, warm {spread(row['warm'])} s; "
                      f"HTML received {spread(row['html'])} s, DOM ready {spread(row['dom'])} s, "
                      f"{statistics.median(row['resources']):.0f} files, the server's answer to each took "
                      f"{spread(row['server_wait'])} s (median), page scripts ran {spread(row['script'])} s")
            s, f = pages["studio"], pages["floor"]
            results.append(Result("studio first load (cold), median", statistics.median(s["cold"]),
                                  statistics.median(f["cold"]), "s", "ours < 2 s; reference: one-button Gradio page",
                                  {"studio": s, "floor": f}))
        client = Client(url, verbose=False, download_files=str(tmp / "downloads"))
        pipe = load_pipeline(model)  # what `conceptlab generate` loads
        cfg = GenerationConfig(prompt=PROMPT, n=N, seed=0, steps=STEPS)

        def ours():
            client.predict(PROMPT, "", 0, N, STEPS, 7.5, "default", 0, 0, model or "", [], [], 1.0, api_name="/generate")

        def reference():
            run_generation(pipe, cfg, tmp / "library" / str(time.perf_counter_ns()), model=model or default_model(),
                           progress=False)

        a, b = interleaved_samples(ours, reference, repeats)
        images = sorted(str(f) for f in (tmp / "library").rglob("*.png"))[:N]
        gallery_port = _port()
        gallery = gallery_floor(gallery_port, images)
        try:
            gclient = Client(f"http://127.0.0.1:{gallery_port}/", verbose=False, download_files=str(tmp / "gdl"))
            g, _ = interleaved_samples(lambda: gclient.predict(api_name="/gallery"), lambda: None, repeats)
        finally:
            gallery.close()
    finally:
        app.close(), floor.close()
        studio.close()
    overhead = statistics.median(x[0] for x in a) - statistics.median(y[0] for y in b)
    floor_g = statistics.median(x[0] for x in g)
    print(f"studio's overhead over the library {overhead:.3f} s; Gradio's own {N}-image gallery round trip "
          f"{spread([x[0] for x in g])} s")
    results.append(Result(f"studio overhead over the library vs Gradio's {N}-image gallery round trip, wall",
                          overhead, floor_g, "s", "ours <= Gradio's own round trip (ratio <= 1)",
                          {"gallery_round_trips": [x[0] for x in g]}))
    name = f"studio generate: {N} img x {STEPS} steps"
    for k, what in ((0, "wall"), (1, "CPU")):
        ratios = [x[k] / y[k] for x, y in zip(a, b)]
        print(f"{name}, {what}: ours {spread([x[k] for x in a])} s, library {spread([y[k] for y in b])} s, "
              f"per-pair ratio {spread(ratios)} over {len(ratios)} pairs")
        results.append(Result(f"{name}, {what}, median", statistics.median(x[k] for x in a),
                              statistics.median(y[k] for y in b), "s", "ratio <= 1.05",
                              {"ours": [x[k] for x in a], "library": [y[k] for y in b], "pair_ratios": ratios}))
    print(f"load average after: {loadavg()}")
    return results


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; see the module's docstring
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, one load")
    parser.add_argument("--model", default=None, help="default: the shipped sticker base model")
    parser.add_argument("--repeats", type=int, default=9, help="generations per side (default 9)")
    parser.add_argument("--loads", type=int, default=5, help="cold and warm page loads per page (default 5)")
    args = parser.parse_args()
    for result in run(quick=args.quick, model=args.model, repeats=args.repeats, loads=args.loads):
        print(result.line())


if __name__ == "__main__":
    main()
