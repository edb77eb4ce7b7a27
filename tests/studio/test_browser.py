"""A real headless Chromium drives the studio as a person would. Quick tier: the page loads, generates and
opens every tab (DreamBooth's form too), and the Edit tab's weight sliders follow the target prompt. Slow tier
(the whole workflow): generate and see the images; draw a training set, train a 10-step token and watch the
status, loss and preview; find it in the library; edit an uploaded photo with a re-weighted word, its blend
mask and attention maps; score the drawn set with the judge, its confusion matrices and report. It takes a
screenshot of each tab; CONCEPTLAB_SCREENSHOTS=DIR keeps them there and runs on the shipped base model
instead of the tiny one, so the pictures show stickers (for the docs).

Debian's chromium and chromium-driver are used as installed (.ci/run installs them); without them the test
is skipped with the reason."""

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--window-size=1280,1400")
WAIT = 120  # seconds for any one thing to appear; two shared cores under load are slow


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"no {path}: install Debian's {package} (apt-get install -y chromium chromium-driver) to run it"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        print(f"\nstudio browser test skipped: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="studio-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory, tiny_dir):
    from conceptlab.studio.app import Studio, launch
    from tests.ports import free_port

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    model = "" if os.environ.get("CONCEPTLAB_SCREENSHOTS") else str(tiny_dir)
    studio = Studio(tmp_path_factory.mktemp("browser") / "ws", model=model, job_env={"OMP_NUM_THREADS": "1"})
    port = free_port()
    app = launch(studio, port=port, block=False, quiet=True)
    start = time.perf_counter()
    browser.get(f"http://127.0.0.1:{port}/")
    _wait(browser, lambda d: d.find_elements("id", "generate-button"))
    print(f"\nfirst load of the studio page: {time.perf_counter() - start:.2f} s")
    yield browser, studio
    app.close()
    studio.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("CONCEPTLAB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(driver, condition, timeout=WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


def _css(driver, selector):
    return driver.find_element("css selector", selector)


def _text(driver, selector) -> str:
    found = driver.find_elements("css selector", selector)
    return found[0].text if found else ""


def _tab(driver, name):
    button = next(b for b in driver.find_elements("css selector", "button[role=tab]") if b.text.strip() == name)
    button.click()
    time.sleep(0.3)


def _type(driver, selector, text):
    from selenium.webdriver.common.keys import Keys

    field = _css(driver, selector)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(str(text), Keys.TAB)


def _shoot(driver, folder: Path, name: str) -> None:
    """A small PNG of the page: a 64-colour palette keeps a screenshot of the shipped model's stickers under
    100 KB and still shows them and the heat maps (the tiny test model draws noise, which packs worse)."""
    from PIL import Image

    raw = folder / f".{name}.raw.png"
    driver.save_screenshot(str(raw))
    with Image.open(raw) as im:
        im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(folder / f"{name}.png",
                                                                                        optimize=True)
    raw.unlink()


@pytest.mark.browser
def test_the_page_generates_and_shows_every_tab(page):
    """The quick tier: the page loads, a generation shows its images, every tab opens."""
    driver, _ = page
    _tab(driver, "Generate")
    _type(driver, "#generate-steps input[type=number]", 4)
    _css(driver, "#generate-button").click()
    _wait(driver, lambda d: len(d.find_elements("css selector", "#generate-gallery img")) >= 4)
    driver.find_elements("css selector", "#generate-gallery img")[1].click()  # select seed 1, then send it
    _wait(driver, lambda d: '"seed":1,' in "".join(_text(d, "#generate-settings").split()))
    _css(driver, "#generate-to-edit").click()
    _wait(driver, lambda d: d.find_elements("css selector", "#edit-photo img"))
    assert _css(driver, "#edit-source textarea, #edit-source input").get_attribute("value").startswith("a sticker of")
    for name, element in (("Train", "#train-start"), ("DreamBooth / LoRA", "#db-start"), ("Concepts", "#concepts-refresh"),
                          ("Edit", "#edit-button"), ("Evaluate", "#evaluate-button")):
        _tab(driver, name)
        _wait(driver, lambda d, element=element: d.find_element("css selector", element).is_displayed(), timeout=10)
    for element in ("#evaluate-scorer", "#evaluate-files", "#evaluate-classifier"):
        assert _css(driver, element).is_displayed()
    # Edit: a weight slider per word of the target prompt, relabelled as the prompt changes
    _tab(driver, "Edit")
    _type(driver, "#edit-target textarea, #edit-target input", "a sticker of a happy red star")
    _wait(driver, lambda d: "happy" in _text(d, "#edit-weight-3"), timeout=20)
    assert "star" in _text(driver, "#edit-weight-5") and not _visible(driver, "#edit-weight-6")
    assert _css(driver, "#edit-attention").is_displayed() and _css(driver, "#edit-blend-mask").is_displayed()


def _close(driver, dropdown: str) -> None:
    """Closes the list a typed dropdown left open (a screenshot would show it over the form)."""
    from selenium.webdriver.common.keys import Keys

    field = _css(driver, f"{dropdown} input")
    field.click()
    field.send_keys(Keys.ESCAPE)
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    time.sleep(0.5)


def _loaded(driver, selector, count: int = 1) -> bool:
    """Whether at least `count` images match `selector` and every one has arrived (a screenshot must not catch
    them half loaded)."""
    found = driver.find_elements("css selector", selector)
    return len(found) >= count and driver.execute_script(
        "return arguments[0].every(im => im.complete && im.naturalWidth > 0)", found)


def _visible(driver, selector) -> bool:
    found = driver.find_elements("css selector", selector)
    return bool(found) and found[0].is_displayed()


@pytest.mark.browser
@pytest.mark.slow  # about 75 s on two idle cores, minutes under load: a 10-step training job runs in it
def test_a_person_generates_trains_edits_and_scores(page, shots, concept_dirs):
    from selenium.webdriver.common.action_chains import ActionChains

    driver, studio = page
    _tab(driver, "Generate")
    # Generate: four images appear in the gallery
    _type(driver, "#generate-steps input[type=number]", 10)
    _css(driver, "#generate-button").click()
    _wait(driver, lambda d: _loaded(d, "#generate-gallery img", 4))
    _shoot(driver, shots, "generate")

    # Train: draw a sticker-world set, train 10 steps, watch it finish with a loss curve and a preview
    _tab(driver, "Train")
    _tab(driver, "Textual inversion")  # the page may have been left on another method's form
    _css(driver, "#draw-world").click()
    _wait(driver, lambda d: "world-broccoli" in _css(d, "#train-images input").get_attribute("value"))
    _type(driver, "#train-token textarea, #train-token input", "<bro>")
    _type(driver, "#train-steps input", 10)
    _type(driver, "#train-every input", 5)
    _type(driver, "#train-batch input", 1)
    _css(driver, "#train-start").click()
    _wait(driver, lambda d: "step " in _text(d, "#train-status"))  # progress shows while it runs
    _wait(driver, lambda d: ": done" in _text(d, "#train-status"), timeout=240)
    assert "step 10 of 10" in _text(driver, "#train-status") and "learned <bro> in 10 steps" in _text(driver, "#train-status")
    _wait(driver, lambda d: d.find_elements("css selector", "#train-preview img"))
    driver.execute_script("arguments[0].scrollIntoView()", _css(driver, "#train-job"))  # status, curve, preview
    _shoot(driver, shots, "train")
    driver.execute_script("window.scrollTo(0, 0)")

    # Concepts: the new token is in the library, with its metadata and preview
    _tab(driver, "Concepts")
    _css(driver, "#concepts-refresh").click()
    _wait(driver, lambda d: "<bro>" in _text(d, "#concepts-table"))
    _type(driver, "#concepts-pick input", "runs/bro/bro")
    _wait(driver, lambda d: _loaded(d, "#concepts-preview img"))
    _wait(driver, lambda d: "final_loss" in _text(d, "#concepts-meta"))
    _close(driver, "#concepts-pick")
    _shoot(driver, shots, "concepts")

    # Edit: upload a photo, invert it (ddim) and edit it
    _tab(driver, "Edit")
    photo = sorted((concept_dirs / "broccoli").glob("*.png"))[0]
    _css(driver, "#edit-photo input[type=file]").send_keys(str(photo))
    _wait(driver, lambda d: d.find_elements("css selector", "#edit-photo img"))
    _type(driver, "#edit-steps input[type=number]", 10)
    _type(driver, "#edit-target textarea, #edit-target input", "a sticker of a sad green broccoli")
    _wait(driver, lambda d: "sad" in _text(d, "#edit-weight-3"), timeout=20)
    _type(driver, "#edit-weight-3 input[type=number]", 2)  # the slider of 'sad'
    next(label for label in driver.find_elements("css selector", "#edit-blend-mask label")
         if label.text.strip() == "difference").click()  # the mask from where source and edit drift apart
    _css(driver, "#edit-attention input").click()
    _css(driver, "#edit-button").click()
    _wait(driver, lambda d: "reconstruction PSNR" in _text(d, "#edit-info"))
    assert "re-weighted: sad x2" in _text(driver, "#edit-info")
    assert len(driver.find_elements("css selector", "#edit-gallery img")) >= 2
    for shown in ("#edit-mask img", "#edit-maps img", "#edit-gallery img"):
        _wait(driver, lambda d, shown=shown: _loaded(d, shown))
    driver.execute_script("arguments[0].scrollIntoView()", _css(driver, "#edit-weights"))  # weights, results, maps
    _shoot(driver, shots, "edit")

    # the photo lies under the region brush: paint a stroke across it and edit only there, pasting the rest back
    canvas = _css(driver, "#edit-region canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    _wait(driver, lambda d: _css(d, "#edit-region canvas").size["width"] > 50)
    ActionChains(driver).move_to_element_with_offset(canvas, -20, 0).click_and_hold().move_by_offset(40, 0) \
        .move_by_offset(0, 10).release().perform()
    next(label for label in driver.find_elements("css selector", "#edit-blend-mask label")
         if label.text.strip() == "attention").click()  # a painted region and the difference mask do not mix
    _css(driver, "#edit-paste input").click()
    _css(driver, "#edit-button").click()
    _wait(driver, lambda d: "inside the painted region" in _text(d, "#edit-info"), timeout=60)
    for shown in ("#edit-mask img", "#edit-gallery img"):
        _wait(driver, lambda d, shown=shown: _loaded(d, shown))
    driver.execute_script("arguments[0].scrollIntoView()", _css(driver, "#edit-region"))  # the stroke, the result
    _shoot(driver, shots, "edit-region")
    driver.execute_script("window.scrollTo(0, 0)")

    # Evaluate: score the drawn sticker-world set with the judge (it knows their labels)
    _tab(driver, "Evaluate")
    _css(driver, "#evaluate-refresh").click()
    _wait(driver, lambda d: _css(d, "#evaluate-folder input").get_attribute("value"))
    _type(driver, "#evaluate-folder input", "uploads/world-broccoli")
    _css(driver, "#evaluate-button").click()
    _wait(driver, lambda d: "emotion" in _text(d, "#evaluate-table"))
    _wait(driver, lambda d: _loaded(d, "#evaluate-confusion img"))
    assert "open the report" in _text(driver, "#evaluate-summary")
    _close(driver, "#evaluate-folder")
    _shoot(driver, shots, "evaluate")
    assert all((shots / f"{n}.png").stat().st_size < 150_000 for n in ("generate", "train", "concepts", "edit",
                                                                         "edit-region", "evaluate"))
