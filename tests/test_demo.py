"""`vimtool demo`: the Gradio app, driven in a real headless browser (Debian's chromium + chromedriver, selenium).

The browser is installed by .ci/run (apt-get) and selenium by the test extra; no browser is ever downloaded. Under
CI (CI=true) a missing piece fails the test; elsewhere it skips, saying what to install. VIMTOOL_DEMO_SCREENSHOT=path
also saves the page (docs/demo.png is made so).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vimtool


def _need(what: str, hint: str) -> None:
    message = f"{what} is missing: {hint}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI must run the browser test)")
    pytest.skip(message)


def _browser():
    """A headless Chromium driven by selenium, or skip/fail (see the module docstring)."""
    try:
        import gradio  # noqa: F401
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        _need(f"python package {e.name}", 'pip install -e ".[test]"')
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        _need("chromium / chromedriver", "apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,920"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)  # the local driver: no download


def _fetch(url: str) -> list:
    """The pixels of an image the page shows (served by the demo's own web server)."""
    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB")).tolist()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_and_generate(pipe, text: str | None, images: int):
    """Launch the demo on a free local port, fill in the condition, click Generate; -> the gallery's images' pixels."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from vimtool.demo import ELEM_IDS, build_demo

    browser = _browser()
    port = _free_port()
    app = build_demo(pipe)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        if text is not None:
            box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"#{ELEM_IDS['prompt']} textarea")))
            box.clear()
            box.send_keys(text)
        wait.until(ec.element_to_be_clickable((By.ID, ELEM_IDS["generate"]))).click()
        gallery = f"#{ELEM_IDS['gallery']} img"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, gallery)) >= images)
        found = browser.find_elements(By.CSS_SELECTOR, gallery)
        shot = os.environ.get("VIMTOOL_DEMO_SCREENSHOT")
        if shot:
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(shot)
        return [_fetch(im.get_attribute("src")) for im in found]  # while the server still runs
    finally:
        browser.quit()
        app.close()


@pytest.mark.slow  # starts a web server and a browser
def test_demo_generates_into_the_gallery_from_a_typed_prompt(parti_world):
    pipe = vimtool.load(str(parti_world["ckpt"]), device="cpu")
    prompt = "a blue square bottom right"
    shown = _serve_and_generate(pipe, prompt, images=4)
    # the page shows what the API makes of the typed prompt with the page's defaults (4 images, best of 8, seed 0)
    expected = pipe.generate(prompt, n=4, rerank=8, seed=0)
    assert shown == [np.asarray(im).tolist() for im in expected]


def test_demo_offers_the_class_ids_and_unconditional_for_a_vim(vim_world):
    from vimtool.demo import UNCONDITIONAL, class_choices

    pipe = vimtool.load(str(vim_world["ckpt"]), device="cpu")
    assert class_choices(pipe) == ["0", "1", "2", UNCONDITIONAL]


@pytest.mark.slow  # starts a web server and a browser
def test_demo_of_a_vim_generates_the_picked_class(vim_world):
    pipe = vimtool.load(str(vim_world["ckpt"]), device="cpu")
    shown = _serve_and_generate(pipe, None, images=4)
    assert shown == [np.asarray(im).tolist() for im in pipe.generate(0, n=4, seed=0)]  # class 0, the first choice


def test_demo_command_serves_the_checkpoint_where_asked(vim_world, monkeypatch):
    try:
        import gradio
    except ImportError:
        _need("python package gradio", 'pip install -e ".[test]"')
    from typer.testing import CliRunner

    from vimtool.commands import app

    launched: dict = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: launched.update(kw, title=self.title))
    res = CliRunner().invoke(app, ["demo", str(vim_world["ckpt"]), "--port", "7999", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7999 and launched["share"] is False
    assert str(vim_world["ckpt"]) in launched["title"]
