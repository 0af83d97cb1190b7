"""The `dalle serve` page in headless Chromium: type a prompt, click Generate, watch the progress indicator, see the
images; then a bad input shows its message next to the field.

Needs Debian's `chromium` and `chromium-driver` (apt); skipped with a reason when they are absent. Chromium is
driven through chromedriver's W3C WebDriver HTTP API with a small urllib client below, so no selenium is needed.
Set DALLE_SERVE_SCREENSHOT=/path.png to keep a screenshot of the page after the generation.
"""
# bazel: manual
# (a Bazel sandbox cannot start a browser; CI runs this file directly with pytest)

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from dalle import serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs headless Chromium: apt-get install -y chromium chromium-driver (Debian)")

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element reference key
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1100,900"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class Browser:
    """Just enough of the W3C WebDriver protocol: navigate, find, type, click, read, run JS, screenshot."""

    def __init__(self, driver_url: str, profile_dir: str):
        self.base = driver_url
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": CHROME_FLAGS + [f"--user-data-dir={profile_dir}"]},
            "goog:loggingPrefs": {"browser": "ALL"},  # the console, where Chromium reports CSP violations
        }}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise WebDriverError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def cmd(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        el = self.find(css)
        self.cmd("POST", f"/element/{el}/clear")
        if text:
            self.cmd("POST", f"/element/{el}/value", {"text": text})

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click")

    def text(self, css: str) -> str:
        return self.cmd("GET", f"/element/{self.find(css)}/text")

    def js(self, script: str, *args: Any) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout: float = 60, what: str = "") -> Any:
        """Polls a JS expression (`return ...`) until it is truthy; fails with `what` and the page's status."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.05)
        state = self.js("return [document.getElementById('status-text').textContent, "
                        "document.getElementById('error').textContent]")
        raise AssertionError(f"timed out after {timeout} s waiting for {what or script}; status/error: {state}")

    def console(self) -> list[str]:
        """The page's console messages so far (chromedriver's log endpoint; each call returns the new ones)."""
        return [entry.get("message", "") for entry in self.cmd("POST", "/se/log", {"type": "browser"})]

    def screenshot(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def quit(self) -> None:
        try:
            self.cmd("DELETE", "")
        except (WebDriverError, OSError):
            pass


@pytest.fixture
def browser():
    port = free_port()
    profile = tempfile.mkdtemp(prefix="dalle-serve-chromium-")
    log = open(os.path.join(profile, "chromedriver.log"), "w")
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
                              stdout=log, stderr=subprocess.STDOUT)
    b = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/status", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline or driver.poll() is not None:
                    raise RuntimeError(f"chromedriver did not start (exit {driver.poll()}); see {log.name}")
                time.sleep(0.1)
        b = Browser(url, os.path.join(profile, "profile"))
        yield b
    finally:
        if b is not None:
            b.quit()
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


class GatedGenerator:
    """Solid-colour images; each call waits at a gate so the test can see the progress indicator while it runs.
    Records each call's image completion (the uploaded bytes, keep_rows) too."""

    def __init__(self):
        self.gate = threading.Event()
        self.calls: list[tuple] = []
        self.completions: list[tuple[bytes | None, int | None]] = []

    def __call__(self, prompt, n, condition_scale, top_k, temperature, seed, progress, *, image=None,
                 keep_rows=None):
        self.calls.append((prompt, n, condition_scale, top_k, temperature, seed))
        self.completions.append((image, keep_rows))
        progress(0.4, f"sampling {n} images")
        assert self.gate.wait(60)
        colours = np.random.default_rng(seed).integers(0, 256, (n, 3), dtype=np.uint8)
        return np.broadcast_to(colours[:, None, None, :], (n, 32, 32, 3)).copy()


def test_page_generates_images_and_shows_field_errors(browser):
    gen = GatedGenerator()
    server = serve.Server(gen, port=0, limits=serve.Limits(max_images=16, image_codes=512),
                          defaults=serve.Defaults(n=4), model_info="fake model for the browser test",
                          examples=["a red circle"]).start()
    try:
        browser.get(server.url + "/")
        assert browser.js("return document.title").startswith("dalle")
        assert "reranking is off" in browser.text("#model-info")
        # The stylesheet and script are files of the package, loaded under `default-src 'self'`; an inline
        # script is refused, so the policy is in force, and nothing of the page's own was refused.
        assert browser.js("return getComputedStyle(document.querySelector('main')).maxWidth") == "980px"
        assert browser.js("return getComputedStyle(document.querySelector('h1 .tagline')).fontWeight") == "400"
        assert browser.js("const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1';"
                          "document.body.append(s); return window.inlineRan === undefined") is True
        refused = [m for m in browser.console() if "Content Security Policy" in m]
        assert len(refused) == 1 and "inline script" in refused[0], refused  # only the one just tried
        assert browser.js("return document.getElementById('top').disabled") is True
        # no code rows in these limits: no completion, and none of its inputs on show
        assert browser.js("return getComputedStyle(document.getElementById('completion')).display") == "none"

        browser.type("#prompt", "a red circle above a blue square")
        browser.type("#n", "3")
        browser.type("#seed", "11")
        browser.click("#generate")
        # the progress indicator: visible, spinning, saying what the worker is doing, button disabled meanwhile
        browser.wait("return document.getElementById('status-text').textContent.includes('sampling 3 images')",
                     what="the progress line to show the running stage")
        assert browser.js("return getComputedStyle(document.getElementById('status')).display") == "block"
        assert browser.js("return getComputedStyle(document.querySelector('.spinner')).display") != "none"
        assert browser.js("return document.getElementById('bar').style.width") == "40%"
        assert browser.js("return document.getElementById('generate').disabled") is True
        gen.gate.set()
        browser.wait("const imgs = document.querySelectorAll('#grid img.result');"
                     "return imgs.length === 3 && [...imgs].every(i => i.complete && i.naturalWidth === 32)",
                     what="three loaded 32 px images")
        assert gen.calls == [("a red circle above a blue square", 3, 3.0, 0, 1.0, 11)]
        assert browser.text("#status-text").startswith("done: 3 image(s)")
        assert "seed 11" in browser.text("#result-meta") and "reranking off" in browser.text("#result-meta")
        assert browser.js("return document.getElementById('generate').disabled") is False
        shot = os.environ.get("DALLE_SERVE_SCREENSHOT")
        if shot:
            browser.screenshot(shot)

        # bad inputs: the server's message is shown, and the offending field is marked
        browser.type("#prompt", "")
        browser.click("#generate")
        browser.wait("return document.getElementById('error').textContent.length > 0", what="the prompt error")
        assert "prompt is empty" in browser.text("#error")
        assert browser.js("return document.getElementById('prompt').getAttribute('aria-invalid')") == "true"

        browser.type("#prompt", "a green star")
        browser.type("#n", "99")
        browser.click("#generate")
        browser.wait("return document.getElementById('error').textContent.includes('number of images')",
                     what="the number-of-images error")
        assert browser.text("#error") == "number of images = 99 must be between 1 and 16"
        assert browser.js("return document.getElementById('n').getAttribute('aria-invalid')") == "true"
        assert browser.js("return document.getElementById('prompt').getAttribute('aria-invalid')") is None
        assert len(gen.calls) == 1  # neither bad request reached the model
        # the previous grid stays on the page
        assert browser.js("return document.querySelectorAll('#grid img.result').length") == 3
        assert not [m for m in browser.console() if "Content Security Policy" in m]
    finally:
        gen.gate.set()
        server.shutdown()


def test_page_with_a_tiny_real_model(browser, tmp_path):
    """`dalle serve`'s own setup on a tiny random-weight checkpoint: a prompt of zero-width characters is refused
    by the generator and shown as the prompt's error; a real prompt then gives its images."""
    from tests.test_serve import make_tiny_checkpoint

    ckpt, _ = make_tiny_checkpoint(str(tmp_path))
    args = serve._parser().parse_args(["--checkpoint", ckpt, "--clip", "", "--port", "0", "--n", "2"])
    server = serve.build_server(args).start()
    try:
        browser.get(server.url + "/")
        assert "16×16 px" in browser.text("#model-info")
        browser.js("document.getElementById('prompt').value = '\\u200b\\u200c\\u2060'")
        browser.click("#generate")
        browser.wait("return document.getElementById('error').textContent.length > 0", timeout=120,
                     what="the empty-prompt error")
        assert "has no words left after caption cleaning" in browser.text("#error")
        assert browser.js("return document.getElementById('prompt').getAttribute('aria-invalid')") == "true"

        browser.type("#prompt", "a red circle")
        browser.type("#seed", "3")
        browser.click("#generate")
        browser.wait("const imgs = document.querySelectorAll('#grid img.result');"
                     "return imgs.length === 2 && [...imgs].every(i => i.complete && i.naturalWidth === 16)",
                     timeout=120, what="two loaded 16 px images")
        assert "seed 3" in browser.text("#result-meta")
        assert browser.js("return document.getElementById('prompt').getAttribute('aria-invalid')") is None
        assert not [m for m in browser.console() if "Content Security Policy" in m]
    finally:
        server.shutdown()


def noise_png(path: str, width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    with open(path, "rb") as f:
        return f.read()


def test_page_completes_an_uploaded_picture(browser, tmp_path):
    """Choose a picture in the file input: it is previewed (a blob: URL, under the CSP) with the rows to be drawn
    shaded; Generate sends it with the chosen rows and shows it beside the completions. A picture over the size
    limit is refused before sending; Remove picture returns to plain generation."""
    picture = str(tmp_path / "picture.png")
    data = noise_png(picture, 40, 30)
    big = str(tmp_path / "big.png")
    big_size = len(noise_png(big, 64, 64, seed=1))
    gen = GatedGenerator()
    gen.gate.set()
    limits = serve.Limits(max_images=16, image_codes=512, code_rows=4, max_image_bytes=len(data) + 100)
    assert big_size > limits.max_image_bytes
    server = serve.Server(gen, port=0, limits=limits, defaults=serve.Defaults(n=2)).start()
    try:
        browser.get(server.url + "/")
        assert browser.js("return getComputedStyle(document.getElementById('completion')).display") == "block"
        assert browser.js("return [...document.querySelectorAll('#keep_rows option')].map(o => o.value)") == [
            "1", "2", "3"]
        assert browser.js("return document.getElementById('keep_rows').disabled") is True  # no picture yet

        image_input = browser.find("#image")
        browser.cmd("POST", f"/element/{image_input}/value", {"text": big})
        browser.type("#prompt", "a red circle")
        browser.click("#generate")
        browser.wait("return document.getElementById('error').textContent.length > 0", what="the size error")
        kib = float(f"{limits.max_image_bytes / 1024:.4g}")
        assert browser.text("#error") == (f"image is {big_size:,} bytes; the limit is {limits.max_image_bytes:,} "
                                          f"bytes ({kib:g} KiB)")
        assert browser.js("return document.getElementById('image').getAttribute('aria-invalid')") == "true"
        assert gen.calls == []  # refused before sending

        browser.cmd("POST", f"/element/{image_input}/clear")
        browser.cmd("POST", f"/element/{image_input}/value", {"text": picture})
        browser.wait("const i = document.getElementById('preview-img');"
                     "return i.src.startsWith('blob:') && i.complete && i.naturalWidth === 40",
                     what="the preview of the chosen picture")
        assert browser.js("return document.getElementById('image').getAttribute('aria-invalid')") is None
        assert browser.text("#error") == ""  # the message was about the picture just replaced
        assert browser.js("return document.getElementById('keep_rows').disabled") is False
        assert browser.js("return document.getElementById('preview-drawn').style.top") == "50%"  # 2 of 4 kept
        browser.click("#keep_rows option[value='3']")
        assert browser.js("return document.getElementById('preview-drawn').style.top") == "75%"
        assert browser.text("#preview-caption") == "top 3 of 4 rows kept; shaded: drawn"

        browser.type("#seed", "5")
        browser.click("#generate")
        browser.wait("const imgs = document.querySelectorAll('#grid img.result');"
                     "const src = document.querySelector('#grid figure.source img');"
                     "return imgs.length === 2 && [...imgs].every(i => i.complete && i.naturalWidth === 32) &&"
                     "  src && src.complete && src.naturalWidth === 40",
                     what="two completions beside the uploaded picture")
        assert gen.completions == [(data, 3)]
        assert gen.calls == [("a red circle", 2, 3.0, 0, 1.0, 5)]
        assert "completing the top 3 of 4 code rows" in browser.text("#result-meta")
        assert browser.text("#grid figure.source figcaption") == "your picture · top 3 rows kept"

        browser.click("#image-clear")  # back to plain generation
        assert browser.js("return document.getElementById('image').files.length") == 0
        assert browser.js("return document.getElementById('keep_rows').disabled") is True
        assert browser.js("return getComputedStyle(document.getElementById('preview')).display") == "none"
        browser.type("#seed", "6")
        browser.click("#generate")
        browser.wait("return document.getElementById('result-meta').textContent.includes('seed 6')",
                     what="the plain generation's results")
        assert gen.completions[-1] == (None, None)
        assert browser.js("return document.querySelectorAll('#grid figure.source').length") == 0
        assert "completing" not in browser.text("#result-meta")
        assert not [m for m in browser.console() if "Content Security Policy" in m]
    finally:
        server.shutdown()
