"""The token-map page and the web demo, in a real headless Chromium (and the demo's HTTP answers).

The browser tests skip, saying why, only where no Chromium (or its driver) is installed;
``scripts/setup.sh`` installs Debian's ``chromium`` and ``chromium-driver`` when run as root.
"""

import io
import json
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from framefusion.tools.answer import LoadedModel
from framefusion.tiny_models import make_synthetic_video, write_video, zoo
from framefusion.tools.visualize import build_token_map, write_html
from framefusion.tools.web import WebDemo, make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --window-size=1280,1100"
).split()

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium browser or chromedriver found: install Debian's chromium and chromium-driver "
    "(scripts/setup.sh does, as root)",
)


@pytest.fixture(scope="module")
def tiny():
    model, processor = zoo.build("qwen2_vl", num_layers=4)
    return LoadedModel(model, processor, "tiny random Qwen2-VL", "random weights", "What moves?")


@pytest.fixture(scope="module")
def server(tiny):
    srv = make_server(WebDemo(tiny, frames=8, max_new_tokens=3), port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="framefusion-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _picture(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)


@needs_chromium
def test_token_map_page_renders_and_its_slider_moves(browser, tiny, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from framefusion import FrameFusionConfig

    video = make_synthetic_video(num_frames=8, size=112, seed=3)
    config = FrameFusionConfig(cost=0.3, similarity_threshold=0.97)
    tmap = build_token_map(tiny.model, tiny.processor, video, "What moves?", config)
    page = write_html(
        tmap, tmp_path / "map.html", results={"untouched": {"answer": "a"}, "framefusion": {"answer": "b"}}
    )
    browser.get(page.as_uri())
    browser.get_log("browser")  # start the log here
    browser.refresh()

    tiles = browser.find_elements(By.CSS_SELECTOR, ".ff-tile")
    assert len(tiles) == tmap.grid.frames == 4
    assert len(browser.find_elements(By.CSS_SELECTOR, ".ff-cells i[data-fate]")) == tmap.video_tokens
    assert all(img.get_property("naturalWidth") > 0 for img in browser.find_elements(By.TAG_NAME, "img"))
    assert browser.find_element(By.CSS_SELECTOR, "svg.ff-chart").is_displayed()

    shot = _picture(browser.get_screenshot_as_png())
    assert shot.std() > 15  # not a blank page
    (tmp_path / "screenshot.png").write_bytes(browser.get_screenshot_as_png())

    stack = tiles[1].find_element(By.CSS_SELECTOR, ".ff-stack")
    before = _picture(stack.screenshot_as_png)
    split = 'getComputedStyle(arguments[0]).getPropertyValue("--ff-split").trim()'
    assert browser.execute_script(f"return {split}", stack) == "50%"
    slider = browser.find_element(By.CSS_SELECTOR, ".ff-slider")
    slider.send_keys(Keys.END)  # all the way right: every frame shown as the original
    assert slider.get_property("value") == "100"
    assert browser.execute_script(f"return {split}", stack) == "100%"
    after = _picture(stack.screenshot_as_png)
    assert before.shape == after.shape and np.abs(before - after).mean() > 2  # what is shown changed
    slider.send_keys(Keys.HOME)  # all the way left: what the model keeps
    assert browser.execute_script(f"return {split}", stack) == "0%"
    assert np.abs(_picture(stack.screenshot_as_png) - after).mean() > 2
    assert "100% kept" in browser.find_element(By.CSS_SELECTOR, ".ff-split-value").text
    assert _errors(browser) == []


@needs_chromium
def test_web_demo_answers_in_the_browser(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.get_log("browser")
    assert "framefusion web demo" in browser.title
    question = browser.find_element(By.ID, "ff-question")
    question.clear()
    question.send_keys("Which way does the red circle move?")
    browser.find_element(By.ID, "ff-submit").click()
    WebDriverWait(browser, 120).until(ec.presence_of_element_located((By.ID, "ff-results")))
    untouched = browser.find_element(By.ID, "answer-untouched").text
    reduced = browser.find_element(By.ID, "answer-framefusion").text
    assert untouched and reduced
    assert browser.find_element(By.ID, "ff-question").get_property("value") == "Which way does the red circle move?"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ff-results .ff-tile")) == 4
    assert _picture(browser.get_screenshot_as_png()).std() > 15
    (tmp_path / "demo.png").write_bytes(browser.get_screenshot_as_png())

    # an upload of our own, picked with the file input (the radio follows)
    clip = write_video(make_synthetic_video(num_frames=4, size=112, seed=5), tmp_path / "mine.mp4")
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(clip))
    assert browser.find_element(By.CSS_SELECTOR, "input[value=upload]").is_selected()
    browser.find_element(By.ID, "ff-submit").click()
    WebDriverWait(browser, 120).until(ec.text_to_be_present_in_element((By.ID, "ff-results"), "mine.mp4"))
    assert browser.find_element(By.ID, "answer-framefusion").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ff-results .ff-tile")) == 2
    assert _errors(browser) == []


# ------------------------------------------------------------------------------ without a browser
def _post(url: str, fields: dict, files: dict | None = None):
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, data) in (files or {}).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_web_demo_over_http(server, tmp_path):
    assert server.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(server + "/healthz", timeout=10) as resp:
        assert resp.read() == b"ok\n"
    start = time.perf_counter()
    status, page = _post(server + "/run", {"video": "shipped", "question": "What moves?", "cost": "0.5"})
    assert status == 200, page
    assert 'id="answer-untouched"' in page and 'id="answer-framefusion"' in page and "ff-map" in page
    assert time.perf_counter() - start < 60

    clip = write_video(make_synthetic_video(num_frames=6, size=112, seed=7), tmp_path / "up.mp4").read_bytes()
    status, page = _post(server + "/run", {"video": "upload", "question": "Q"}, {"file": ("up.mp4", clip)})
    assert status == 200 and "up.mp4, 6 frames" in page


@pytest.mark.parametrize(
    "fields, files, words",
    [
        ({"video": "upload", "question": "Q"}, {"file": ("x.mp4", b"")}, ["no video uploaded"]),
        ({"video": "upload", "question": "Q"}, {"file": ("junk.mp4", b"0123456789" * 50)}, ["junk.mp4"]),
        ({"video": "shipped", "question": "  "}, None, ["question is empty"]),
        ({"video": "shipped", "question": "Q", "cost": "2"}, None, ["cost", "(0, 1]"]),
        ({"video": "shipped", "question": "Q", "cost": "lots"}, None, ["cost must be a number", "lots"]),
        ({"video": "elsewhere", "question": "Q"}, None, ["shipped", "upload", "elsewhere"]),
    ],
)
def test_web_demo_bad_input_is_a_400_with_the_reason(server, fields, files, words):
    status, page = _post(server + "/run", fields, files)
    assert status == 400
    assert "framefusion: error:" in page
    for w in words:
        assert w in json.loads(json.dumps(page)).replace("&#x27;", "'")
