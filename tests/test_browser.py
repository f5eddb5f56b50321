"""End to end in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) against
`rmt app` on a free localhost port: the Replay page draws its plotly charts, the segment slider redraws them,
the bertviz view renders with every non-local host blocked, and a screenshot is saved; and `rmt app --trace`
opens a trace of 10,000 segments (recorded here with a tiny random model), draws the whole run's overview,
jumps to the fact segment and shows its attention.

Skips, saying why, only when no Chromium/ChromeDriver or no Selenium is installed (.ci/run installs them).
RMT_SCREENSHOT_DIR=docs/screenshots also saves a small screenshot of every page there (for the README).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import make_tiny_rmt, serve_app

pytestmark = pytest.mark.browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
PAGES = ("replay", "memory", "probes", "length", "efficiency", "record")


def _skip_reason() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium " \
               "chromium-driver); .ci/run does"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it drives the system chromedriver, no download)"
    return None


if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """A tiny random checkpoint (RMT_SCREENSHOT_CHECKPOINT names a real one for the README's screenshots)."""
    from rmt_core.checkpoint import save_checkpoint

    if os.environ.get("RMT_SCREENSHOT_CHECKPOINT"):
        return Path(os.environ["RMT_SCREENSHOT_CHECKPOINT"])

    model = make_tiny_rmt(tokenizer, segment_size=24, num_mem_tokens=4, task="memorize", trained_segments=3)
    return save_checkpoint(model, tmp_path_factory.mktemp("browser") / "tiny", tokenizer=tokenizer)


@contextlib.contextmanager
def serve(log: Path, env: dict, *arguments: str):
    """`rmt app ARGUMENTS --port P` in its own process group; yields (url, when it was started, log file)."""
    env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with serve_app([sys.executable, "-m", "rmt_cli.main", "app", *arguments], log, env) as url:
        yield url, started, log


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """`rmt app` on the (tiny) checkpoint; yields (url, when it was started, log file)."""
    folder = tmp_path_factory.mktemp("server")
    with serve(folder / "streamlit.log", {"RMT_CHECKPOINT": str(checkpoint), "RMT_CACHE_DIR": str(folder / "cache")}) \
            as running:
        yield running


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "profile.default_content_setting_values.automatic_downloads": 1,  # several files from one page
    })
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--hide-scrollbars",
                     # offline: every host but this machine fails to resolve (a CDN script would not load)
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def texts(driver, selector: str) -> list[str]:
    """Text of every element matching selector, read in one script call (charts redraw while we look)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);", selector)


def chart_titles(driver) -> list[str]:
    return texts(driver, ".js-plotly-plot svg.main-svg .gtitle")


def shown_segment(driver) -> int | None:
    """The segment the Replay page's token strip shows (its data-rmt-segment attribute)."""
    found = driver.execute_script(
        "const e = document.querySelector('[data-rmt-segment]'); return e ? +e.dataset.rmtSegment : null;")
    return None if found is None else int(found)


def wait_for(driver, condition, seconds: float, what: str):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))
    except Exception:
        pytest.fail(f"timed out after {seconds} s waiting for {what}; chart titles: {chart_titles(driver)}")


def test_replay_page_in_a_real_browser(server, browser, downloads, tmp_path):
    url, launched, _ = server
    browser.get(url)
    wait_for(browser, lambda d: any(t.startswith("Read:") for t in chart_titles(d)), 120, "the Replay charts")
    first_chart = time.perf_counter() - launched
    # The overview is drawn by its own element and may land a moment after the segment's maps.
    wait_for(browser, lambda d: any(t.startswith("The whole run") for t in chart_titles(d)), 30, "the overview")
    titles = chart_titles(browser)
    assert shown_segment(browser) == 0  # the token strip (HTML) of the fact's segment
    assert "Segment 0: tokens and roles" in texts(browser, "[data-rmt-segment]")[0]
    assert any(t.startswith("The whole run") for t in titles), titles
    assert any(t.startswith("Write:") for t in titles), titles
    assert len(texts(browser, ".js-plotly-plot svg.main-svg")) >= 4

    # the segment slider: focus its range input and step right, as a keyboard user would
    thumb = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSlider"] input[type="range"][aria-label="Segment"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", thumb)
    moved = time.perf_counter()
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    wait_for(browser, lambda d: shown_segment(d) == 1
             and any("segment 1" in t for t in chart_titles(d) if t.startswith("Read:")), 60, "segment 1")
    segment_change = time.perf_counter() - moved

    # bertviz's head view: offline (non-local hosts blocked), its SVG has text nodes with the memory labels
    def head_view_frame(driver):
        frames = [f for f in driver.find_elements(By.TAG_NAME, "iframe")
                  if "bertviz head view" in (f.get_attribute("srcdoc") or "")]
        if frames:
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", frames[0])
            driver.switch_to.frame(frames[0])
            return True
        return False

    wait_for(browser, head_view_frame, 60, "the bertviz head view iframe")
    try:
        labels = wait_for(browser, lambda d: texts(d, "svg text") or None, 30, "text nodes in the bertviz SVG")
        assert "[mem 0]" in labels and "[CLS]" in labels
        assert not browser.find_elements(By.CSS_SELECTOR, "script[src^='http']")
    finally:
        browser.switch_to.default_content()

    # the export buttons of the token strip (the figure is built when a button is clicked): each file is what
    # its button says
    for fmt in ("png", "svg", "pdf", "html"):
        button = browser.find_element(By.CSS_SELECTOR, f".st-key-dl_tokens_{fmt} button")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", button)
    def finished(_):
        # Chromium writes a download under a temporary name (".crdownload", or a hidden ".org.chromium.*" file)
        # and renames it when done: wait until none is left.
        present = [p.name for p in downloads.iterdir()]
        names = sorted(n for n in present if not n.startswith("."))
        busy = any(n.startswith(".") or n.endswith(".crdownload") for n in present)
        return names if len(names) >= 4 and not busy else None

    files = wait_for(browser, finished, 90, "four finished downloads")
    assert files == ["tokens.html", "tokens.pdf", "tokens.png", "tokens.svg"], files
    assert (downloads / "tokens.png").read_bytes().startswith(b"\x89PNG")
    assert (downloads / "tokens.pdf").read_bytes().startswith(b"%PDF-")
    assert b"<svg" in (downloads / "tokens.svg").read_bytes()[:200]
    assert b"Segment 1: tokens and roles" in (downloads / "tokens.html").read_bytes()

    browser.execute_script("window.scrollTo(0, 0);")
    shot = tmp_path / "replay.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    print(f"\nrmt app -> first chart: {first_chart:.1f} s; segment change -> redrawn: {segment_change:.1f} s")


def save_screenshot(browser, name: str) -> None:
    """A small PNG of the browser's view in $RMT_SCREENSHOT_DIR (for the README)."""
    from PIL import Image

    folder = Path(os.environ["RMT_SCREENSHOT_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    browser.save_screenshot(str(path))
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((900, 900))
        image.save(path, optimize=True)


@pytest.mark.skipif(not os.environ.get("RMT_SCREENSHOT_DIR"), reason="set RMT_SCREENSHOT_DIR to save page screenshots")
def test_page_screenshots(server, browser):
    """Small PNG of every page for the README (docs/screenshots/)."""
    url, _, _ = server

    def save(name: str) -> None:
        save_screenshot(browser, name)

    for page in PAGES:
        browser.get(url if page == "replay" else f"{url}/{page}")
        if page not in ("probes", "record"):
            wait_for(browser, lambda d: chart_titles(d), 180, f"a chart on {page}")
        time.sleep(1.0)
        wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'), 180,
                 f"{page} to finish running")
        time.sleep(1.5)  # let the last charts finish drawing
        save(page)
        if page == "replay":  # and the bertviz views further down the page
            heading = wait_for(browser, lambda d: d.find_elements(By.XPATH, "//h3[contains(., 'bertviz')]"), 60,
                               "the bertviz heading")
            browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading[0])
            time.sleep(1.5)
            save("replay_bertviz")


# ----- a trace of 10,000 segments, opened with `rmt app --trace` ----------------------------------------------
LONG_SEGMENTS = 10_000


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory, tokenizer):
    """A detect sample of 10,000 segments of 16 tokens replayed by a tiny random model into a trace folder;
    attention kept only for the first and last two segments and the fact's, full attention for the fact's."""
    import torch

    from rmt_core.replay import RecordingPolicy, replay
    from rmt_core.tasks import TaskBuilder

    model = make_tiny_rmt(tokenizer, segment_size=16, num_mem_tokens=4, hidden=16, layers=2, heads=2, task="detect")
    sample = TaskBuilder("detect", tokenizer, 16).sample(LONG_SEGMENTS, seed=3)
    fact = sample.facts[0].segment
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and shares the machine best
    try:
        trace = replay(model, sample, out=tmp_path_factory.mktemp("long") / "trace", progress=False,
                       policy=RecordingPolicy(attention_budget_mib=0, full_attention_segments=[fact]))
    finally:
        torch.set_num_threads(threads)
    assert trace.attention_segments == sorted({0, 1, fact, LONG_SEGMENTS - 2, LONG_SEGMENTS - 1})
    return trace.path, fact


def plotly_charts(driver) -> list[dict]:
    """Title, data and shapes of every drawn plotly chart (plotly keeps them on the chart's div)."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('.js-plotly-plot')).filter(d => d.layout).map(d => ({
            title: ((d.layout.title && d.layout.title.text) || '').replace(/<[^>]*>/g, ''), traces: d.data.length,
            shapes: (d.layout.shapes || []).map(s => s.x0), notes: (d.layout.annotations || []).map(a => a.text),
            range: d._fullLayout.xaxis.range}));
    """)


# Pixels (from the overview chart's top left) of point arguments[0] of its first trace, with the segments of
# that bin and its neighbours; or, given arguments[1] = [segment, segment], of those segments mid-height.
_OVERVIEW_PIXELS = """
const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find(g => ((g.layout.title && g.layout.title.text) || '').includes('The whole run'));
const fl = gd._fullLayout, box = gd.getBoundingClientRect(), trace = gd._fullData[0];
const at = (x, y) => ({x: fl.xaxis._offset + fl.xaxis.l2p(x), y: fl.yaxis._offset + y, width: box.width,
                       height: box.height});
if (arguments[1]) return arguments[1].map(s => at(s, fl.yaxis._length / 2));
const i = arguments[0], point = at(trace.x[i], fl.yaxis.l2p(trace.y[i]));
const bins = [];
for (let j = i - 2; j <= i + 2; j++) bins.push(Math.round(trace.customdata[j][2]));  // each bin's highest point
point.bins = bins;
return point;
"""


def error_texts(driver) -> list[str]:
    """Text of every error box and exception on the page, and any traceback text."""
    found = texts(driver, '[data-testid="stAlertContentError"], [data-testid="stException"]')
    body = driver.find_element(By.TAG_NAME, "body").text
    return found + (["Traceback in the page text"] if "Traceback (most recent call last)" in body else [])


@pytest.mark.slow
def test_a_trace_of_ten_thousand_segments(long_trace, browser, tmp_path):
    path, fact = long_trace
    with serve(tmp_path / "streamlit.log", {"RMT_CACHE_DIR": str(tmp_path / "cache")}, "--trace", str(path)) \
            as (url, _, log):
        browser.get(url)

        def overview(driver):
            return next((c for c in plotly_charts(driver) if c["title"].startswith("The whole run")), None)

        drawn = wait_for(browser, overview, 120, "the whole-run overview")
        assert "bins of up to" in drawn["title"]  # 10,000 segments drawn as min/max envelopes
        assert drawn["traces"] >= 4 * 3 - 2  # four statistics, each a max line, a min band and a mean (one may lack)
        assert fact in drawn["shapes"] and LONG_SEGMENTS - 1 in drawn["shapes"]  # the fact and question marked
        assert "fact" in drawn["notes"] and "question" in drawn["notes"]
        assert not error_texts(browser), error_texts(browser)

        def click(label: str) -> None:
            button = wait_for(browser, lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button")
                                                  if b.text == label], 30, f"the button {label!r}")[0]
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", button)

        last = LONG_SEGMENTS - 1
        click(f"question segment {last}")  # away from the fact segment the page opens on
        wait_for(browser, lambda d: shown_segment(d) == last, 60, f"question segment {last}")
        click(f"fact segment {fact}")
        wait_for(browser, lambda d: shown_segment(d) == fact
                 and any(t.startswith("Read:") and f"segment {fact}" in t for t in chart_titles(d))
                 and any(t.startswith("Write:") and f"segment {fact}" in t for t in chart_titles(d)), 60,
                 f"the attention of fact segment {fact}")
        assert overview(browser)["shapes"] == drawn["shapes"]  # the overview stays as it was drawn
        frames = wait_for(browser, lambda d: [f for f in d.find_elements(By.TAG_NAME, "iframe")
                                              if "bertviz head view" in (f.get_attribute("srcdoc") or "")], 60,
                          "the bertviz head view of the fact segment (its recorded full attention)")
        assert frames
        assert not error_texts(browser), error_texts(browser)

        # a click on the overview goes to the highest point of the bin clicked
        chart = next(e for e in browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
                     if "The whole run" in (e.text or ""))
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", chart)
        at = browser.execute_script(_OVERVIEW_PIXELS, 100)  # bin 100 of the first row's max line
        ActionChains(browser).move_to_element_with_offset(chart, int(at["x"] - at["width"] / 2),
                                                          int(at["y"] - at["height"] / 2)).pause(0.3).click().perform()
        wait_for(browser, lambda d: shown_segment(d) in at["bins"], 60, f"a segment of the bins near {at['bins']}")
        # the box-select tool and a drag across segments 1,000..1,500 zoom the overview to them, redrawn finer
        box = chart.find_element(By.CSS_SELECTOR, '.modebar-btn[data-val="select"]')
        browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}));", box)
        start, end = browser.execute_script(_OVERVIEW_PIXELS, None, [1000, 1500])
        ActionChains(browser).move_to_element_with_offset(chart, int(start["x"] - start["width"] / 2),
                                                          int(start["y"] - start["height"] / 2)) \
            .click_and_hold().move_by_offset(int((end["x"] - start["x"]) / 2), 0) \
            .move_by_offset(int((end["x"] - start["x"]) / 2), 0).release().perform()
        zoomed = wait_for(browser, lambda d: (lambda c: c if c and "bins of up to 2 segments" in c["title"] else None)(
            overview(d)), 60, "the overview of segments 1,000..1,500")
        assert 995 <= zoomed["range"][0] <= 1010 and 1490 <= zoomed["range"][1] <= 1505, zoomed["range"]
        assert not error_texts(browser), error_texts(browser)
        assert "Traceback" not in log.read_text(errors="replace")


@pytest.mark.skipif(not (os.environ.get("RMT_SCREENSHOT_DIR") and os.environ.get("RMT_SCREENSHOT_TRACE")),
                    reason="set RMT_SCREENSHOT_DIR and RMT_SCREENSHOT_TRACE (a long trace folder) for its screenshots")
def test_trace_screenshots(browser, tmp_path):
    """The whole-run overview of a long trace and its fact segment's views, for the README."""
    path = Path(os.environ["RMT_SCREENSHOT_TRACE"])
    with serve(tmp_path / "streamlit.log", {"RMT_CACHE_DIR": str(tmp_path / "cache")}, "--trace", str(path)) as running:
        browser.get(running[0])
        wait_for(browser, lambda d: any(t.startswith("The whole run") for t in chart_titles(d)), 180, "the overview")
        wait_for(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'), 180,
                 "the page to finish running")
        time.sleep(2.0)
        for name, heading in (("trace_overview", "The whole run"), ("trace_segment", "One segment")):
            found = wait_for(browser, lambda d: d.find_elements(By.XPATH, f"//h3[contains(., '{heading}')]"), 60,
                             f"the heading {heading!r}")
            browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", found[0])
            time.sleep(1.5)
            save_screenshot(browser, name)
