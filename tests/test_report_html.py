"""The HTML report in a real browser: a traced program's capture, rendered as
html, opened in headless Chromium (selenium + chromedriver). The page must
show its tables, the flamegraph of each view must name the allocating line,
the view buttons must switch flamegraphs, and inferno's search must work
inside its frame.

Chromium and chromedriver are required, not optional: without them this test
fails and says how to install them (scripts/test-all does, as CI runs it)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from heapsite import _heapsite

CHROMIUM = os.environ.get("HEAPSITE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HEAPSITE_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"

# A loop, not a comprehension: the allocating frame is build() on every
# CPython (3.9-3.11 give comprehensions frames of their own, 3.12+ inline them).
PROGRAM = textwrap.dedent(
    """
    import sys, time
    import heapsite, heapsite._capture as capture

    heapsite.start(16)
    began = time.time()
    timeline = [(0.0, heapsite.traced_memory()[0])]

    def build():
        out = []
        for i in range(200_000):
            out.append(complex(i, i))
        return out

    kept = build()
    timeline.append((time.time() - began, heapsite.traced_memory()[0]))
    capture.write(sys.argv[1], timeline=timeline)
    """
)
ALLOCATING_LINE = PROGRAM.splitlines().index("        out.append(complex(i, i))") + 1


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"headless Chromium is needed for the HTML report test, missing: {missing}; "
            f"install it with: {INSTALL}",
            pytrace=False,
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is needed: pip install selenium", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1200",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium must not try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(program path, html path) of the traced program's HTML report."""
    folder = tmp_path_factory.mktemp("html")
    script = folder / "prog.py"
    script.write_text(PROGRAM)
    capture = folder / "prog.capture"
    result = subprocess.run(
        [sys.executable, str(script), str(capture)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    html = folder / "prog.html"
    html.write_bytes(_heapsite.render_report(str(capture), "html", 10))
    return script, html


def frame_titles(driver):
    """The full labels of the frames inferno drew ("name (size, percent)")."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#frames g > title'), t => t.textContent);"
    )


def show(driver, view):
    """Clicks a view's button, then enters that view's flamegraph frame."""
    from selenium.webdriver.common.by import By

    driver.switch_to.default_content()
    driver.find_element(By.CSS_SELECTOR, f"#views button[data-view={view}]").click()
    iframe = driver.find_element(By.CSS_SELECTOR, f"#flame-{view} iframe")
    assert iframe.is_displayed()
    others = driver.find_elements(By.CSS_SELECTOR, f".flame:not(#flame-{view}) iframe")
    assert others and not any(other.is_displayed() for other in others)
    driver.switch_to.frame(iframe)


def test_the_page_is_self_contained_and_small(report):
    _script, html = report
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<link" not in page and 'src="http' not in page and "<script src" not in page
    assert len(page) < 400_000


def test_html_report_in_a_browser(browser, report):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    script, html = report
    where = f"{script}:{ALLOCATING_LINE}"
    browser.get(html.as_uri())

    # The page and its tables.
    assert browser.title == f"heapsite: {script} {script.with_suffix('.capture')}"
    meta = browser.find_element(By.ID, "meta").text
    assert f"CPython {sys.version_info[0]}.{sys.version_info[1]}" in meta
    assert "Peak" in meta and "PID" in meta
    for table in ("top-peak", "top-live"):
        rows = browser.find_elements(By.CSS_SELECTOR, f"#{table} tr")
        assert len(rows) >= 2, table
        first = rows[1].text
        assert where in first and "complex(i, i)" in first, first
    assert "Partition of a set of" in browser.find_element(By.ID, "kinds").text
    points = browser.find_element(By.CSS_SELECTOR, "#timeline polyline")
    assert len(points.get_attribute("points").split()) == 2

    # The peak flamegraph is shown first and names the allocating line.
    peak = browser.find_element(By.CSS_SELECTOR, "#flame-peak iframe")
    assert peak.is_displayed()
    browser.switch_to.frame(peak)
    assert browser.find_element(By.ID, "title").text == "live at peak"
    label = f"build ({where})"
    assert any(t.startswith(label) for t in frame_titles(browser)), frame_titles(browser)
    drawn = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#frames text")]
    assert label in drawn, drawn

    # inferno's search, through its own button and prompt: matching frames are
    # painted in the search colour and "Matched:" tells their share.
    browser.find_element(By.ID, "search").click()
    prompt = WebDriverWait(browser, 10).until(lambda d: d.switch_to.alert)
    prompt.send_keys("^build ")
    prompt.accept()
    matched = browser.find_element(By.ID, "matched").text
    assert matched.startswith("Matched: ") and float(matched[9:].rstrip("%")) > 90, matched
    painted = browser.execute_script(
        "return Array.from(document.querySelectorAll('#frames g'))"
        ".filter(g => g.querySelector('rect').getAttribute('fill') === searchcolor)"
        ".map(g => g.querySelector('title').textContent);"
    )
    assert len(painted) == 1 and painted[0].startswith(label), painted
    # And called directly, as a test or a console would.
    browser.execute_script("search_prompt(); search('no-such-frame-anywhere');")
    assert browser.find_element(By.ID, "matched").text == ""
    browser.execute_script("search('complex|build')")
    assert browser.find_element(By.ID, "matched").text.startswith("Matched: ")

    # The other views, by their buttons.
    show(browser, "live")
    assert browser.find_element(By.ID, "title").text == "still live at exit"
    assert any(t.startswith(label) for t in frame_titles(browser))
    show(browser, "total")
    assert browser.find_element(By.ID, "title").text == "allocated in total"
    assert any(t.startswith(label) for t in frame_titles(browser))
    show(browser, "peak")
    assert browser.find_element(By.ID, "title").text == "live at peak"
    browser.switch_to.default_content()
    pressed = browser.find_element(By.CSS_SELECTOR, "#views button[aria-pressed=true]")
    assert pressed.get_attribute("data-view") == "peak"


JULIA = Path(__file__).resolve().parent.parent / "examples" / "julia_set.py"


def test_julia_example_end_to_end(browser, tmp_path):
    """The README's example through the front door: `heapsite run` (preload),
    the text report's top line at the peak is a line that builds the complex
    numbers, the capture is small, and the HTML flamegraph shows that line."""
    from selenium.webdriver.common.by import By

    capture = tmp_path / "julia.capture"
    result = subprocess.run(
        [sys.executable, "-m", "heapsite", "run", "-o", str(capture), str(JULIA)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = JULIA.read_text().splitlines()
    builders = {i for i, line in enumerate(lines, 1) if ".append(complex(" in line}
    assert len(builders) == 2
    first = next(line for line in result.stderr.splitlines() if line.startswith("#1:"))
    assert any(first.startswith(f"#1: {JULIA}:{n}: ") for n in builders), first
    assert capture.stat().st_size < 3_000_000
    html = tmp_path / "julia.html"
    html.write_bytes(_heapsite.render_report(str(capture), "html", 10))
    browser.get(html.as_uri())
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "#flame-peak iframe"))
    titles = frame_titles(browser)
    for n in builders:
        label = f"calc_pure_python ({JULIA}:{n})"
        assert any(t.startswith(label) for t in titles), (label, titles)
    browser.switch_to.default_content()
