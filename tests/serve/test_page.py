"""The interactive page in a real browser: Debian's headless Chromium, driven by Selenium."""

import shutil

import pytest

from tests.serve.conftest import TOKEN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are missing: `make test` installs them (apt packages "
                    "chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    yield browser
    browser.quit()


def test_page_asks_a_question_and_shows_the_answer(app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = app
    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    token = browser.find_element(By.ID, "token")
    token.send_keys(TOKEN)
    browser.execute_script("document.getElementById('token').onchange()")
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#scene option")) > 0)
    # the image arrives after the scene list: until then the <img> has no src at all
    wait.until(lambda b: (b.find_element(By.ID, "render").get_attribute("src") or "").startswith("blob:"))
    assert browser.execute_script("return document.getElementById('render').naturalWidth") > 100 or \
        wait.until(lambda b: b.execute_script("return document.getElementById('render').naturalWidth") > 100)
    question = browser.find_element(By.ID, "question")
    question.clear()
    question.send_keys("What color is the chair?")
    browser.find_element(By.ID, "ask").click()
    wait.until(EC.text_to_be_present_in_element_attribute((By.ID, "answer"), "data-done", "1"))
    answer = browser.find_element(By.ID, "answer").text
    assert answer and answer != "…"
    browser.find_element(By.ID, "score").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#ranked li")) == 2)
    items = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#ranked li")]
    assert {i.split()[0] for i in items} == {"yes", "no"} and "log-odds" in items[0]
    assert browser.find_element(By.ID, "status").text == ""
