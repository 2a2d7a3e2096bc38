"""The interactive page in a real browser: Debian's headless Chromium, driven by Selenium.

WebGL runs on Chromium's software rasteriser (SwiftShader), so the 3D view renders without a GPU.
"""

import base64
import io
import re
import shutil

import numpy as np
import pytest

from tests.serve.conftest import TOKEN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "chromium and chromedriver are missing: `make test` installs them (apt packages chromium, chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def page(app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = app
    browser.get(url + "/")
    from selenium.webdriver.common.keys import Keys

    browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.TAB)  # leaving the field loads the scenes
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return window.cl3dor && window.cl3dor.ready"))
    return browser


def _canvas_pixels(browser) -> np.ndarray:
    import matplotlib.image as mpimg

    data = browser.execute_script("return document.querySelector('#view canvas').toDataURL('image/png')")
    return mpimg.imread(io.BytesIO(base64.b64decode(data.split(",", 1)[1])), format="png")[..., :3]


def test_the_room_renders_in_3d_with_every_object(page):
    objects = page.execute_script("return window.cl3dor.objects.map(o => [o.object_id, o.label, o.points.length])")
    assert len(objects) >= 5 and all(n > 0 and n % 3 == 0 for _, _, n in objects)
    pixels = _canvas_pixels(page)
    background = np.array([0xF4, 0xF4, 0xF4]) / 255
    drawn = np.abs(pixels - background).max(-1) > 0.05
    assert pixels.shape[:2] == (480, 640) and drawn.mean() > 0.01, drawn.mean()  # not a blank canvas
    # the points in their colours (the floor grid is gray): red, blue, green ... objects
    chromatic = pixels.max(-1) - pixels.min(-1) > 0.2
    assert chromatic.sum() > 200, chromatic.sum()
    assert len(np.unique((pixels[chromatic] * 4).astype(int), axis=0)) > 5


def _point_at(page, object_id):
    """Move the real mouse onto the object's point nearest the camera; returns the tooltip's text."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = page.find_element(By.CSS_SELECTOR, "#view canvas")
    spot = page.execute_script("return window.cl3dor.screenOf(arguments[0])", object_id)
    size = canvas.size
    ActionChains(page).move_to_element_with_offset(
        canvas, int(spot["x"] - size["width"] / 2), int(spot["y"] - size["height"] / 2)
    ).perform()
    return page.find_element(By.ID, "tip").text, page.execute_script("return window.cl3dor.hovered")


def test_hover_names_the_object_and_a_click_captions_it(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    objects = page.execute_script("return window.cl3dor.objects.map(o => [o.object_id, o.label, o.size])")
    # the largest objects first: their nearest point is the least likely to hide behind another object
    ranked = sorted(objects, key=lambda o: -np.prod(o[2]))
    hits = []
    for object_id, label, _ in ranked[:4]:
        tip, hovered = _point_at(page, object_id)
        if hovered == object_id:
            hits.append((object_id, label, tip))
    assert hits, "no object could be pointed at"
    object_id, label, tip = hits[0]
    assert tip == f"{label} #{object_id}"
    _point_at(page, object_id)
    ActionChains(page).click().perform()
    WebDriverWait(page, 60).until(lambda b: b.find_element(By.ID, "caption").get_attribute("data-done") == "1")
    assert page.find_element(By.ID, "selected").text == f"{label} #{object_id}"
    assert page.find_element(By.ID, "caption").text not in ("", "…")
    assert page.execute_script(
        "return [...window.cl3dor.highlighted].map(k => window.cl3dor.objects[k].object_id)"
    ) == [object_id]
    assert page.find_element(By.ID, "status").text == ""


def test_asking_highlights_what_the_model_read_the_question_as_about_and_scoring_ranks(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    labels = page.execute_script("return window.cl3dor.objects.map(o => o.label)")
    label = labels[0]
    question = page.find_element(By.ID, "question")
    question.clear()
    question.send_keys(f"What color is the {label}?")
    page.find_element(By.ID, "ask").click()
    WebDriverWait(page, 60).until(lambda b: b.find_element(By.ID, "answer").get_attribute("data-done") == "1")
    answer = page.find_element(By.ID, "answer").text
    assert answer and answer != "…"
    highlighted = page.execute_script("return [...window.cl3dor.highlighted]")
    grounded = page.execute_script("return window.cl3dor.answered.objects")
    ids = page.execute_script("return window.cl3dor.objects.map(o => o.object_id)")
    said = " " + re.sub(r"[^a-z0-9 ]", " ", answer.lower()) + " "
    named = {k for k, lab in enumerate(labels) if lab and f" {lab.lower()} " in said}
    assert set(highlighted) == {ids.index(i) for i in grounded} | named
    assert page.find_element(By.ID, "about").text == (
        ", ".join(f"{labels[ids.index(i)]} #{i}" for i in grounded) or "none"
    )
    page.find_element(By.ID, "score").click()
    WebDriverWait(page, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#ranked li")) == 2)
    items = [li.text for li in page.find_elements(By.CSS_SELECTOR, "#ranked li")]
    assert {i.split()[0] for i in items} == {"yes", "no"} and "log-odds" in items[0]
    assert page.find_element(By.ID, "status").text == ""
