"""Benchmark of the dashboard in a real headless Chromium: launch, segment changes, opening a long trace, and
the server's peak memory on a long trace against a short one.

    python bench/app.py --record          # record the two traces below first when missing (minutes; say how long)
    python bench/app.py --long-trace DIR --short-trace DIR

Traces (defaults under traces/, which git ignores): a 31,936-segment replay of the shipped default checkpoint
(2,043,904 tokens at its 64-token segments; `rmt replay --segments 31936 --attention-budget-mib 0
--full-attention 0,-1`) and a 64-segment one. Each measurement starts a fresh `rmt app` (one port for all, an
empty cache folder unless said otherwise) and drives it from Chromium, as a person would. Segment changes are
timed in the browser: performance.now() from the click until the token strip and every chart title that names a
segment name the new one. Launches are timed from starting `rmt app` until the chart is drawn; the first launch
also finds the browser's cache of Streamlit's own JavaScript empty, later ones reuse it (as a person's browser
does). Peak memory is the server process's VmHWM after the same session on each trace (open, 6 segment changes,
jumps to the question and fact segments, the Memory page), `--repeats` times each in alternating order, as
medians: one server's peak varies by tens of MiB from run to run. Other numbers are one run each (segment
changes: median and max of that run). The machine's load average is printed beside each: on 2 shared cores
every time depends on it.

Prints (targets of issue 16):
    launch to first chart (default checkpoint)               <= 8 s
    segment change to redrawn charts (default; long trace)   <= 0.5 s
    launch/open of the 31,936-segment trace to its overview  <= 5 s
    peak RSS, long trace / short trace                       <= 1.15
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LONG, SHORT = 31_936, 64

# Whether the segment views show segment k: the token strip (an element with data-rmt-segment) and every chart
# title that names a segment, all naming k.
_SHOWS_SEGMENT = """
const k = arguments[0];
const named = Array.from(document.querySelectorAll('[data-rmt-segment]')).map(e => +e.dataset.rmtSegment);
for (const d of document.querySelectorAll('.js-plotly-plot')) {
    if (!d.layout) continue;
    const title = ((d.layout.title && d.layout.title.text) || '').replace(/<[^>]*>/g, '');
    for (const m of title.matchAll(/[Ss]egment (\\d+)/g)) named.push(+m[1]);
}
return named.length >= 2 && named.every(n => n === k);
"""

# Click the button labelled arguments[0]; resolve with the ms until _SHOWS_SEGMENT(arguments[1]) holds.
_CLICK_AND_TIME = """
const [label, k, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const shows = new Function(%s);
const button = Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === label);
if (!button) { done(-1); return; }
const start = performance.now();
button.click();
(function check() {
    if (shows(k)) done(performance.now() - start);
    else if (performance.now() - start > 60000) done(-2);
    else setTimeout(check, 5);
})();
""" % json.dumps(_SHOWS_SEGMENT)


from rmt_cli.commands.app import free_port  # noqa: E402  (after the path is set)

PORT = free_port()  # every launch serves on the same port, as `rmt app` does (8501), so the browser's cache of
# Streamlit's own JavaScript is warm after the first launch, as it is for a person who opened the app before


@contextlib.contextmanager
def app(*arguments: str, cache: Path | None = None):
    """A fresh `rmt app` server; yields (url, process, started) with started = time.perf_counter() at launch."""
    from rmt_cli.commands.app import served
    from rmt_core.errors import RMTError

    folder = Path(tempfile.mkdtemp(prefix="rmt-bench-app-"))
    started = time.perf_counter()
    try:
        with served(arguments, env={"RMT_CACHE_DIR": str(cache or folder / "cache")}, log=folder / "server.log",
                    port=PORT, cwd=REPO) as (url, process):
            yield url, process, started
    except RMTError as error:
        raise SystemExit(str(error)) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise SystemExit("bench/app.py needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(90)
    return driver


def wait(driver, condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = condition(driver)
        except Exception:  # the page is redrawing under us
            found = None
        if found:
            return found
        time.sleep(0.02)
    raise SystemExit(f"timed out after {seconds} s waiting for {what}")


def titles(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot')).filter(d => d.layout && d.layout.title)"
        ".map(d => (d.layout.title.text || '').replace(/<[^>]*>/g, ''));")


def overview_drawn(driver, n: int) -> bool:
    """The whole-run overview of an n-segment trace is drawn: its axis spans segments 0..n-1 (not the chart of
    the input shown before, which stays on the page until it is replaced) and its plot holds paths."""
    return driver.execute_script("""
        const d = Array.from(document.querySelectorAll('.js-plotly-plot')).find(d => d.layout && d.layout.title &&
            (d.layout.title.text || '').includes('The whole run'));
        return !!d && d._fullLayout && d._fullLayout.xaxis.range[1] === arguments[0] - 0.5 &&
            d.querySelectorAll('.scatterlayer path').length > 0;
    """, n)


def current(driver) -> int | None:
    """The segment the token strip shows."""
    found = driver.execute_script(
        "const e = document.querySelector('[data-rmt-segment]'); return e ? +e.dataset.rmtSegment : null;")
    return None if found is None else int(found)


def click_and_time(driver, label: str, k: int) -> float:
    ms = driver.execute_async_script(_CLICK_AND_TIME, label, k)
    if ms < 0:
        raise SystemExit(f"{'no button ' + repr(label) if ms == -1 else 'no redraw within 60 s'} (segment {k}); "
                         f"titles: {titles(driver)}")
    return ms / 1000


def segment_changes(driver, n: int, facts: list[int], question: int, steps: int = 6) -> list[float]:
    """Seconds from a click to every chart showing the new segment: `steps` x next, then the question and the
    fact segment."""
    wait(driver, lambda d: current(d) is not None, 60, "the segment views")
    times = []
    for _ in range(steps):
        t = current(driver)
        if t >= n - 1:
            break
        times.append(click_and_time(driver, "next ▶", t + 1))
    if question != current(driver):
        times.append(click_and_time(driver, f"question segment {question}", question))
    if facts and facts[0] != current(driver):
        times.append(click_and_time(driver, f"fact segment {facts[0]}", facts[0]))
    return times


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmHWM"], values["VmRSS"]


def trace_facts(path: Path) -> tuple[int, list[int], int]:
    from rmt_core.trace import Trace

    trace = Trace.open(path)
    facts = sorted({int(f["segment"]) for f in trace.metadata.get("facts") or []})
    return trace.n_segments, facts, trace.n_segments - 1


def record(path: Path, segments: int) -> None:
    print(f"recording {path} ({segments:,} segments of the default checkpoint)…", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: fastest for this small model, kind to the machine
    subprocess.run(["nice", sys.executable, "-m", "rmt_cli.main", "replay", "--segments", str(segments), "--out",
                    str(path), "--attention-budget-mib", "0", "--full-attention", "0,-1", "--quiet"], env=env,
                   cwd=REPO, check=True)
    print(f"  recorded in {time.perf_counter() - started:.0f} s", flush=True)


def load() -> str:
    return "load average %.1f" % os.getloadavg()[0]


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} changes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-trace", type=Path, default=REPO / "traces" / f"memorize-{LONG}")
    parser.add_argument("--short-trace", type=Path, default=REPO / "traces" / f"memorize-{SHORT}")
    parser.add_argument("--record", action="store_true", help="record missing traces first")
    parser.add_argument("--repeats", type=int, default=3, help="peak-memory sessions on each trace (default 3)")
    args = parser.parse_args()
    for path, segments in ((args.long_trace, LONG), (args.short_trace, SHORT)):
        if not (path / "manifest.json").is_file():
            if not args.record:
                raise SystemExit(f"{path} is not a trace; pass --record to record it, or --long-trace/--short-trace")
            record(path, segments)
    n_long, facts_long, question_long = trace_facts(args.long_trace)
    n_short, facts_short, question_short = trace_facts(args.short_trace)
    driver = browser()
    rows = []
    try:
        # 1. the shipped default checkpoint: launch with an empty cache (the model is loaded and the sample
        # replayed), then again (the replay cached as a trace folder), then segment changes
        default_cache = Path(tempfile.mkdtemp(prefix="rmt-bench-cache-"))
        for label in ("cold start, empty cache", "warm start, replay cached"):
            with app(cache=default_cache) as (url, process, started):
                driver.get(url)
                wait(driver, lambda d: titles(d), 180, "the first chart")
                first = time.perf_counter() - started
                rows.append((f"launch to first chart, default checkpoint ({label})", f"{first:.1f} s", load()))
                if label.startswith("warm"):
                    n = int(driver.execute_script(
                        "return +document.body.innerText.match(/([\\d,]+) segments?,/)[1].replace(/,/g, '')"))
                    changes = segment_changes(driver, n, [0], n - 1)
                    rows.append(("segment change to redrawn charts, default checkpoint", fmt(changes), load()))
                driver.get("about:blank")
        shutil.rmtree(default_cache, ignore_errors=True)
        # 2. the long trace: `rmt app --trace` launch (empty statistics cache, then the sidecar), segment changes
        cache = Path(tempfile.mkdtemp(prefix="rmt-bench-cache-"))
        try:
            for label in ("statistics computed", "statistics from the sidecar"):
                with app("--trace", str(args.long_trace), cache=cache) as (url, process, started):
                    driver.get(url)
                    wait(driver, lambda d: overview_drawn(d, n_long), 120, "the overview")
                    rows.append((f"rmt app --trace ({n_long:,} segments) to drawn overview ({label})",
                                 f"{time.perf_counter() - started:.1f} s", load()))
                    if label.endswith("sidecar"):
                        changes = segment_changes(driver, n_long, facts_long, question_long)
                        rows.append((f"segment change to redrawn charts, {n_long:,}-segment trace", fmt(changes),
                                     load()))
                    driver.get("about:blank")
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        # 3. opening the long trace from the sidebar of a running app (empty statistics cache)
        with app() as (url, process, started):
            from selenium.webdriver.common.by import By
            from selenium.webdriver.common.keys import Keys

            driver.get(url)
            wait(driver, lambda d: titles(d), 180, "the first chart")
            radio = wait(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="stRadio"] label')
                                            if e.text.strip() == "Trace folder"], 30, "the Trace folder choice")
            radio[0].click()
            box = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'input[aria-label="Trace folder (on the server)"]'),
                       30, "the trace folder box")[0]
            box.send_keys(str(args.long_trace))
            opened = time.perf_counter()
            box.send_keys(Keys.ENTER)
            wait(driver, lambda d: overview_drawn(d, n_long), 120, "the overview")
            rows.append((f"open the {n_long:,}-segment trace from the sidebar to drawn overview",
                         f"{time.perf_counter() - opened:.1f} s", load()))
            driver.get("about:blank")
        # 4. peak memory of the server: the same session on the long and the short trace, `--repeats` times each
        # in alternating order (one server's peak varies by tens of MiB from run to run: allocator, threads)
        peaks: dict[int, list[float]] = {n_long: [], n_short: []}
        runs = [(args.long_trace, n_long, facts_long, question_long),
                (args.short_trace, n_short, facts_short, question_short)]
        for r in range(args.repeats):
            for path, n, facts, question in (runs if r % 2 == 0 else runs[::-1]):
                with app("--trace", str(path)) as (url, process, started):
                    driver.get(url)
                    wait(driver, lambda d: overview_drawn(d, n), 120, "the overview")
                    segment_changes(driver, n, facts, question)
                    driver.get(f"{url}/memory")
                    wait(driver, lambda d: any(t.startswith("Memory norms") for t in titles(d)), 120,
                         "the Memory page")
                    time.sleep(1.0)
                    peaks[n].append(peak_rss_mib(process.pid)[0])
                    driver.get("about:blank")
        for n in (n_long, n_short):
            rows.append((f"server peak RSS, {n:,}-segment trace",
                         f"median {statistics.median(peaks[n]):.0f} MiB ({', '.join(f'{p:.0f}' for p in peaks[n])})",
                         ""))
        rows.append(("peak RSS ratio, long / short (medians)",
                     f"{statistics.median(peaks[n_long]) / statistics.median(peaks[n_short]):.3f}", "target <= 1.15"))
    finally:
        driver.quit()
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<48}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
