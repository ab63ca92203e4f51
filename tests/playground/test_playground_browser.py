"""The playground in a real headless browser (Debian's chromium through its chromedriver)
against a real server: it asks "What is 2+2?", watches the answer cells go from masked to
text over several steps, reads the figures, replays the steps and saves a screenshot; a
two-turn conversation is answered right at both turns by every shipped model;
bad input shows the server's own message in the page. On the tiny Fast-dLLM v2 and LLaDA2.0
models (a second app on the same cluster) the settings are the chosen model's family's, and
the grid gains a row per block as the answer grows, every answer token in a cell.

Set FASTDLLM_SCREENSHOT_DIR to keep the screenshot (docs/playground.png in the README comes
from `FASTDLLM_SCREENSHOT_DIR=docs pytest tests/playground/test_playground_browser.py`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from fastdllm_ray.serve.config import AppConfig
from tests.conftest import TINY_LLADA2, TINY_V2
from tests.playground.conftest import API_KEY
from tests.serve.alone import answer_alone, outputs_alone, served_view

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no chromium/chromedriver: scripts/setup.sh installs Debian's when run as root",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402  (after the skip: only with a browser to drive)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from fastdllm_ray.model.shipped import SHIPPED_MODELS  # noqa: E402
from fastdllm_ray.train.data import difference_key, split_of, sum_key  # noqa: E402

ANSWER = "2 + 2 = 4. The answer is 4."
# held-out problems (asserted below); the second turn needs the first answer
TWO_TURNS = [("What is 21+57?", "21 + 57 = 78. The answer is 78.", sum_key(21, 57)),
             ("Now subtract 17.", "78 - 17 = 61. The answer is 61.", difference_key(78, 17))]
# records every class and data-step change of the answer cells, with the class before it
WATCH_CELLS = """
window.cellLog = [];
new MutationObserver((records) => {
  const cells = Array.from(document.querySelectorAll('#canvas .cell'));
  for (const r of records) {
    if (r.type !== 'attributes') continue;
    window.cellLog.push({cell: cells.indexOf(r.target), attribute: r.attributeName, before: r.oldValue,
                         after: r.target.getAttribute(r.attributeName)});
  }
}).observe(document.getElementById('canvas'), {subtree: true, attributes: true, attributeOldValue: true,
                                                  attributeFilter: ['class', 'data-step']});
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,640",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, base_url):
    """The playground, opened as a person would: without a key first, then typing it in."""
    browser.get(f"{base_url}/playground")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.ID, "error").is_displayed())
    assert "missing API key" in browser.find_element(By.ID, "error").text  # the server's 401, shown
    key = browser.find_element(By.ID, "key")
    key.send_keys(API_KEY, Keys.TAB)  # a change event: the page lists the models again
    wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "tiny-llada-arith")
    assert not browser.find_element(By.ID, "error").is_displayed()
    return browser


def set_field(page, field: str, value: str) -> None:
    element = page.find_element(By.ID, field)
    element.clear()
    element.send_keys(value)


def send(page, message: str) -> None:
    box = page.find_element(By.ID, "message")
    box.clear()
    box.send_keys(message, Keys.ENTER)


def test_the_answer_fills_in_over_several_steps(page, tmp_path):
    set_field(page, "steps", "16")  # 8 forwards per block: 4 cells fill in per step
    page.execute_script(WATCH_CELLS)
    send(page, "What is 2+2?")
    WebDriverWait(page, 60).until(lambda b: "NFE" in b.find_element(By.ID, "stats").text)

    answer = page.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1].text
    assert answer == ANSWER
    assert shown_fields(page) == {"cache", "factor", "steps"}  # LLaDA's own settings
    stats = page.find_element(By.ID, "stats").text
    assert stats.startswith("NFE 8 · 3.50 tokens per forward · latency ") and "28 tokens" in stats
    assert re.search(r" · prompt \d+ tokens$", stats)  # LLaDA: nothing from the prefix cache, so no "cached"

    log = page.execute_script("return window.cellLog")
    cells = page.find_elements(By.CSS_SELECTOR, "#canvas .cell")
    assert len(cells) == 64  # the answer canvas: 64 tokens, 2 blocks of 32
    filled = {e["cell"] for e in log if e["attribute"] == "class" and e["before"] == "cell mask"
              and e["after"].startswith("cell new")}
    assert filled == set(range(32))  # every cell of the first block went from masked to text
    steps = {e["cell"]: int(e["after"]) for e in log if e["attribute"] == "data-step"}
    assert sorted(set(steps.values())) == list(range(1, 9))  # over 8 steps, 4 cells each
    assert all(list(steps.values()).count(s) == 4 for s in range(1, 9))
    shown = "".join(c.text for c in cells[:len(ANSWER)]).replace("\u2423", " ")
    assert shown == ANSWER
    assert all("unused" in c.get_attribute("class") for c in cells[32:])  # never decoded: it stopped

    page.find_element(By.ID, "replay").click()  # slowly, step by step: the moment in the README
    WebDriverWait(page, 30, poll_frequency=0.02).until(lambda b: replayed_step(b) >= 4)
    screenshots = Path(os.environ.get("FASTDLLM_SCREENSHOT_DIR") or tmp_path)
    screenshots.mkdir(parents=True, exist_ok=True)
    assert page.save_screenshot(str(screenshots / "playground.png"))
    WebDriverWait(page, 30).until(lambda b: b.find_element(By.ID, "replay").is_enabled())
    assert replayed_step(page) == 8
    cells = page.find_elements(By.CSS_SELECTOR, "#canvas .cell")  # drawn anew by the replay
    assert "".join(c.text for c in cells[:len(ANSWER)]).replace("\u2423", " ") == ANSWER


def converse(page, model: str) -> None:
    """A new chat with `model`: each turn's answer is checked as it comes."""
    Select(page.find_element(By.ID, "model")).select_by_value(model)
    page.find_element(By.ID, "reset").click()
    for field in ("steps", "threshold", "block_length", "max_tokens"):  # the server's defaults (shown or not)
        page.execute_script("document.getElementById(arguments[0]).value = ''", field)
    for turn, (question, _, _) in enumerate(TWO_TURNS):
        send(page, question)
        WebDriverWait(page, 60).until(lambda b: "NFE" in b.find_element(By.ID, "stats").text)
        answers = [m.text for m in page.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")]
        assert answers == [answer for _, answer, _ in TWO_TURNS[: turn + 1]], model


@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_a_two_turn_conversation_is_answered_right_at_both_turns(page, model):
    assert all(split_of(key) == "eval" for _, _, key in TWO_TURNS)
    converse(page, model)
    Select(page.find_element(By.ID, "model")).select_by_value("tiny-llada-arith")  # as the other tests expect


def replayed_step(page) -> int:
    progress = page.find_element(By.ID, "progress").text  # "step 4: block 0, ..."
    return int(progress.split(":")[0].split()[1]) if progress.startswith("step ") else 0


@pytest.mark.parametrize("field, value, message", [
    ("message", "", "messages.0.content: a user message must not be empty"),
    ("threshold", "2", "threshold: 2.0 is outside (0, 1]"),
    ("max_tokens", "1000000000", "max_tokens: 1000000000 is beyond the model's context"),
    ("block_length", "abc", "block_length: Input should be a valid integer"),
])
def test_bad_input_shows_the_servers_message(page, field, value, message):
    page.find_element(By.ID, "reset").click()  # a new chat: an empty message is the conversation's first
    messages_before = len(page.find_elements(By.CSS_SELECTOR, "#messages .msg"))
    if field != "message":
        set_field(page, field, value)
    send(page, value if field == "message" else "What is 2+2?")
    error = page.find_element(By.ID, "error")
    WebDriverWait(page, 60).until(lambda b: error.is_displayed())
    assert message in error.text and "Traceback" not in error.text
    assert len(page.find_elements(By.CSS_SELECTOR, "#messages .msg")) == messages_before  # nothing half-made
    if field != "message":
        set_field(page, field, "")  # back to the server's default


FAMILY_FIELDS = ("cache", "factor", "steps", "sub_block_length", "block_cache", "steps_per_block")
# the rows of the grid each time one is added, and the masked cells of the rows before it then
WATCH_ROWS = """
window.rowLog = [];
new MutationObserver(() => {
  const rows = Array.from(document.querySelectorAll('#canvas .block'));
  const earlier = rows.slice(0, -1).flatMap((row) => Array.from(row.children));
  window.rowLog.push({rows: rows.length, earlierMasked: earlier.filter((c) => c.classList.contains('mask')).length});
}).observe(document.getElementById('canvas'), {childList: true});
"""


def shown_fields(page) -> set[str]:
    return {field for field in FAMILY_FIELDS if page.find_element(By.ID, field).is_displayed()}


def cell_text(text: str, special: bool) -> str:
    """What the page writes in a cell (playground.js cellText)."""
    return "\u220e" if special else text.replace(" ", "\u2423").replace("\n", "\u23ce")


@pytest.fixture(scope="module")
def block_diffusion_url(base_url):
    """A second app on the playground tests' cluster, under /bd: the tiny v2 and LLaDA2.0 models."""
    from ray import serve

    from fastdllm_ray.serve.builder import build_app

    config = AppConfig(api_keys=[API_KEY], num_cpus_per_replica=0.5, engine={"max_num_seqs": 4, "max_queue": 8},
                       models=[{"model": str(TINY_V2), "model_name": "tiny-v2"},
                               {"model": str(TINY_LLADA2), "model_name": "tiny-llada2"}])
    serve.run(build_app(config), name="block-diffusion", route_prefix="/bd")  # returns once its replicas run
    try:
        yield f"{base_url}/bd"
    finally:
        serve.delete("block-diffusion")


@pytest.mark.parametrize("model, settings, fields", [
    ("tiny-v2", {"threshold": "0.9", "sub_block_length": "8", "block_cache": "true"},
     {"sub_block_length", "block_cache"}),
    ("tiny-llada2", {"steps_per_block": "8"}, {"steps_per_block"}),
])
def test_a_block_diffusion_answer_grows_a_row_per_block(browser, block_diffusion_url, model, settings, fields):
    browser.get(f"{block_diffusion_url}/playground")
    wait = WebDriverWait(browser, 30)
    if not browser.find_element(By.ID, "key").get_attribute("value"):
        browser.find_element(By.ID, "key").send_keys(API_KEY, Keys.TAB)
    wait.until(lambda b: b.find_element(By.ID, "model").get_attribute("value") == "tiny-v2")
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    assert shown_fields(browser) == fields  # the family's own settings; LLaDA's are not sent
    for field, value in settings.items():
        if field == "block_cache":
            Select(browser.find_element(By.ID, field)).select_by_value(value)
        else:
            set_field(browser, field, value)
    browser.execute_script(WATCH_ROWS)
    send(browser, "What is 12+7?")
    WebDriverWait(browser, 120).until(lambda b: "NFE" in b.find_element(By.ID, "stats").text)

    checkpoint = TINY_V2 if model == "tiny-v2" else TINY_LLADA2
    body = {"messages": [{"role": "user", "content": "What is 12+7?"}],
            **{k: v == "true" if k == "block_cache" else float(v) if "." in v else int(v) for k, v in settings.items()}}
    text, result = answer_alone(checkpoint, body)
    assert browser.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant")[-1].get_attribute("textContent") == text
    assert browser.find_element(By.ID, "stats").text.startswith(f"NFE {result.nfe} ")
    rows = []  # the engine's rows, in order: the first block holds the prompt's tail (v2: then a carried id's row)
    for out in outputs_alone(checkpoint, body, stream_steps=True):
        if not rows or rows[-1] != out.step.row_cells:
            rows.append(out.step.row_cells)
    drawn = [len(row.find_elements(By.CSS_SELECTOR, ".cell")) for row in browser.find_elements(By.CSS_SELECTOR,
                                                                                                 "#canvas .block")]
    assert drawn == rows and len(rows) >= 3, (drawn, rows)  # one row per block decoded, none drawn ahead
    log = [entry for entry in browser.execute_script("return window.rowLog") if entry["rows"]]
    assert [entry["rows"] for entry in log] == list(range(1, len(rows) + 1))  # one at a time, as the answer grew
    assert all(entry["earlierMasked"] == 0 for entry in log)  # a new row once the blocks before it were decided
    tokenizer = served_view(checkpoint).tokenizer
    special = set(tokenizer.all_special_ids)
    cells = browser.find_elements(By.CSS_SELECTOR, "#canvas .cell")
    shown = [cell.get_attribute("textContent") for cell in cells[:len(result.token_ids)]]
    assert shown == [cell_text(tokenizer.decode([t]), t in special) for t in result.token_ids]
    assert not any("mask" in cell.get_attribute("class") for cell in cells)
    if os.environ.get("FASTDLLM_SCREENSHOT_DIR"):
        assert browser.save_screenshot(str(Path(os.environ["FASTDLLM_SCREENSHOT_DIR"]) / f"playground-{model}.png"))
