"""The web page at / in a real browser (Chromium from the Debian packages, driven by Selenium): type a title, see
the playlist with artists and why, like and skip songs, ask for more, start over. With PLAYLIST_SCREENSHOT=path
it keeps a screenshot (the README's). Skipped only when no Chromium and chromedriver can be found (.ci/run
installs them)."""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from test_service import free_port, pipeline  # noqa: F401  (the module's trained pipeline fixture)

from playlist_gen.cli import parse_config
from playlist_gen.feedback_log import read_events
from tests.conftest import ROOT

SCREENSHOT = os.environ.get("PLAYLIST_SCREENSHOT")  # e.g. docs/web_page.png: where to keep the page's picture
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no Chromium with chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def server(pipeline):  # noqa: F811
    port = free_port()
    proc = subprocess.Popen([sys.executable, "generate_playlist.py", *pipeline, "--serve", f"--port={port}",
                             "--num_songs=5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/health", timeout=1)
            break
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.1)
    yield base
    proc.kill()
    proc.wait(timeout=30)


def test_a_listener_makes_likes_skips_and_extends_a_playlist_in_a_browser(browser, server, pipeline):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server)
    title = browser.find_element(By.CSS_SELECTOR, "input[placeholder*='a title or a mood']")
    title.send_keys("深夜emo chill")  # chromedriver types only characters of the BMP: no emoji here
    browser.find_element(By.XPATH, "//button[normalize-space()='Make a playlist']").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#songs li")) == 5)
    songs = browser.find_elements(By.CSS_SELECTOR, "#songs li")
    assert all(s.find_element(By.CLASS_NAME, "artist").text.startswith("- ") for s in songs)
    assert all(s.find_element(By.CLASS_NAME, "why").text.startswith("why: ") for s in songs)
    assert browser.find_element(By.ID, "heading").text == "深夜emo chill"
    songs[0].find_element(By.XPATH, ".//button[normalize-space()='Like']").click()
    wait.until(lambda b: "liked" in songs[0].get_attribute("class"))
    songs[1].find_element(By.XPATH, ".//button[normalize-space()='Skip']").click()
    wait.until(lambda b: "skipped" in songs[1].get_attribute("class"))
    browser.find_element(By.XPATH, "//button[normalize-space()='More songs']").click()
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#songs li")) == 10)
    numbers = [li.get_attribute("value") for li in browser.find_elements(By.CSS_SELECTOR, "#songs li")]
    assert numbers == [str(n) for n in range(1, 11)]
    if SCREENSHOT:
        browser.save_screenshot(str(ROOT / SCREENSHOT))
    browser.find_element(By.XPATH, "//button[normalize-space()='Start over']").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "likes forgotten"))
    assert browser.find_elements(By.CSS_SELECTOR, "#songs li") == []
    browser.find_element(By.CSS_SELECTOR, "input[placeholder*='a title or a mood']").send_keys("")
    browser.find_element(By.XPATH, "//button[normalize-space()='Make a playlist']").click()  # an empty title
    wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "the title is empty"))
    events = read_events(parse_config(pipeline).feedback_db_path)
    assert [e["action"] for e in events if e["action"] != "shown"][-4:] == ["like", "skip", "more", "new"]
