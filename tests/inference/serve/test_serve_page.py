"""The web page in a real headless browser (Debian's chromium driven by Playwright): pick / drop files, type a
text, see the label and the probability bars; search a gallery with an alignment model.

Skipped, with the reason, where Playwright or chromium is absent (pip install playwright; apt-get install chromium;
POLYMODAL_CHROMIUM names another binary)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from conftest import LABELS, LoopbackServer, png_bytes, wav_bytes

from polymodal.inference import Predictor
from polymodal.inference.retrieval import EmbeddingIndex
from polymodal.inference.serve import ServeSettings, create_app

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
CHROMIUM = os.environ.get("POLYMODAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None or not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (apt-get install chromium, or set POLYMODAL_CHROMIUM)",
                allow_module_level=True)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--disable-sync",
                 "--no-first-run", "--metrics-recording-only", "--mute-audio"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    failed = []
    local = (url, "blob:" + url, "data:")  # the page itself, and previews of the user's own files

    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("request", lambda request: None if request.url.startswith(local) else failed.append(request.url))
    page.goto(url + "/")
    page.wait_for_selector(".modality")  # the form is built from GET /v1/model
    return page, failed


def wait_for_label(page) -> str:
    page.wait_for_function("() => { const t = document.getElementById('label').textContent; return t && t !== '…'; }")
    return page.text_content("#label")


def drop_file(page, selector, data: bytes, name: str, mime: str) -> None:
    """A real drop event with a DataTransfer holding the file, as a user's drag and drop sends it."""
    page.evaluate("""([selector, b64, name, mime]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: mime }));
        const zone = document.querySelector(selector).parentElement;
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }""", [selector, base64.b64encode(data).decode(), name, mime])


def test_upload_an_image_and_see_the_predicted_label(browser, classifier_dir, tmp_path):
    predictor = Predictor(classifier_dir)
    image = tmp_path / "seven.png"
    image.write_bytes(png_bytes(20, 24, seed=11))
    expected = predictor.predict(photo=str(image))
    with LoopbackServer(create_app(predictor, ServeSettings(max_wait_ms=1))) as server:
        page, outside = open_page(browser, server.url)
        assert "multiclass" in page.text_content("#model-meta")
        page.set_input_files("#input-photo", str(image))
        assert "seven.png" in page.text_content(".drop .file")
        page.click("#predict")
        assert wait_for_label(page) == expected.label
        bars = page.query_selector_all("#bars .bar")
        assert len(bars) == len(LABELS)
        shown = {bar.query_selector(".lab").text_content(): bar.query_selector(".p").text_content() for bar in bars}
        assert shown == {name: f"{100 * p:.1f}%" for name, p in expected.probabilities.items()}
        assert page.text_content("#used") == "from photo"
        page.close()
    assert outside == []  # nothing fetched from anywhere but this server


def test_drop_audio_and_type_text(browser, classifier_dir, tmp_path):
    predictor = Predictor(classifier_dir)
    audio = wav_bytes(0.4, seed=12)
    (tmp_path / "clip.wav").write_bytes(audio)
    expected = predictor.predict(voice=str(tmp_path / "clip.wav"), caption="a dog barks")
    with LoopbackServer(create_app(predictor)) as server:
        page, _ = open_page(browser, server.url)
        drop_file(page, "#input-voice", audio, "clip.wav", "audio/wav")
        page.fill("#input-caption", "a dog barks")
        page.click("#predict")
        assert wait_for_label(page) == expected.label
        assert page.text_content("#used") == "from voice + caption"
        page.close()


def test_an_error_is_shown_not_a_crash(browser, classifier_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with LoopbackServer(create_app(Predictor(classifier_dir))) as server:
        page, _ = open_page(browser, server.url)
        page.set_input_files("#input-photo", str(bad))
        page.click("#predict")
        page.wait_for_selector("#error", state="visible")
        assert "not a readable image" in page.text_content("#error")
        page.close()


def test_search_the_gallery_with_an_alignment_model(browser, align_dir, index_dir, gallery):
    app = create_app(Predictor(align_dir), index=EmbeddingIndex.load(index_dir), index_info={"modality": "photo"})
    with LoopbackServer(app) as server:
        page, _ = open_page(browser, server.url)
        assert page.is_visible("#search")
        page.set_input_files("#input-photo", str(gallery[3]))
        page.click("#search")
        page.wait_for_selector("#neighbours li")
        items = [li.text_content() for li in page.query_selector_all("#neighbours li")]
        assert len(items) == 5 and items[0].startswith("item3") and "cos 1.000" in items[0]
        page.close()


def test_api_key_prompt(browser, classifier_dir, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(seed=13))
    with LoopbackServer(create_app(Predictor(classifier_dir), ServeSettings(api_key="k3y"))) as server:
        page, _ = open_page_without_form(browser, server.url)
        page.wait_for_selector("#auth", state="visible")  # /v1/model said 401: the page asks for the key
        page.fill("#api-key", "k3y")
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector(".modality")
        page.set_input_files("#input-photo", str(image))
        page.click("#predict")
        assert wait_for_label(page) in LABELS
        page.close()


def open_page_without_form(browser, url):
    page = browser.new_page()
    page.goto(url + "/")
    return page, []
