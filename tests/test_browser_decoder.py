"""The Replay page of a decoder checkpoint (a tiny random one, and the shipped qa1_decoder) in a real headless
Chromium: both maps are drawn (the read map onto the read memory at the front, the write map of the write memory
at the end), the generated answer is shown, and the offline bertviz view labels both blocks of slots. Skips like
tests/test_browser.py without a browser."""

from __future__ import annotations

import sys

import pytest

from conftest import save_tiny_decoder, serve_app
from test_browser import _skip_reason, chart_titles, texts, wait_for

pytestmark = pytest.mark.browser

if _skip_reason():
    pytest.skip(_skip_reason(), allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from test_browser import CHROMEDRIVER, CHROMIUM  # noqa: E402


@pytest.fixture(scope="module", params=["tiny", "shipped"])
def decoder_checkpoint(request, tmp_path_factory, tokenizer):
    """A tiny random decoder, and the shipped qa1 decoder checkpoint (the MiniLM backbone)."""
    if request.param == "shipped":
        from rmt_core.checkpoint import shipped_checkpoints

        folder = shipped_checkpoints().get("qa1_decoder")
        if folder is None:
            pytest.skip("no shipped checkpoints/qa1_decoder")
        return folder
    return save_tiny_decoder(tokenizer, tmp_path_factory.mktemp("browser") / "qa1_tiny")


def test_decoder_replay_page_in_a_real_browser(decoder_checkpoint, tmp_path):
    import os

    env = {**os.environ, "RMT_CHECKPOINT": str(decoder_checkpoint), "PYTHONUNBUFFERED": "1"}
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"):
        options.add_argument(argument)
    with serve_app([sys.executable, "-m", "rmt_cli.main", "app"], tmp_path / "streamlit.log", env) as url:
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            browser.set_page_load_timeout(60)
            browser.get(url)
            wait_for(browser, lambda d: any(t.startswith("Write:") for t in chart_titles(d)), 180, "both maps")
            titles = chart_titles(browser)
            assert any(t.startswith("Read: tokens attending to the read memory at the front") for t in titles), titles
            assert any(t.startswith("Write: the write memory at the end") for t in titles), titles
            ticks = texts(browser, ".js-plotly-plot .ytick text")
            assert "read 0" in ticks and "write 0" in ticks
            assert any("generated answer" in t for t in texts(browser, '[data-testid="stMarkdownContainer"]'))

            def head_view_frame(driver):
                frames = [f for f in driver.find_elements(By.TAG_NAME, "iframe")
                          if "bertviz head view" in (f.get_attribute("srcdoc") or "")]
                if frames:
                    driver.switch_to.frame(frames[0])
                    return True
                return False

            wait_for(browser, head_view_frame, 90, "the bertviz head view")
            labels = wait_for(browser, lambda d: texts(d, "svg text") or None, 30, "bertviz labels")
            assert "[read 0]" in labels and "[write 0]" in labels
        finally:
            browser.quit()
