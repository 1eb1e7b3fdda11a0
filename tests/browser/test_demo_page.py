"""The demo page (index.html) as a user sees it: headless Chromium, served from dist/,
talking to two dev ComfyUI servers via ``?servers=``. Checks real outcomes: result pixels,
progress and previews, cancelling, language switching (persisted), removing a server, and
non-blank screenshots in ``test-artifacts/``."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest
from pagepoll import poll as _poll

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 30_000


def _solid_png(rgb, size=(32, 24)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return buf.getvalue()


def _fresh_input(page, tmp_path: Path) -> None:
    """Pick an image no earlier test ran: inputs are named after their bytes, so a job on
    an image a server has already processed is answered from its cache at once, with no
    node running (the tests that watch a job run need one that does)."""
    import uuid

    rgb = tuple(uuid.uuid4().bytes[:3])
    src = tmp_path / "fresh.png"
    src.write_bytes(_solid_png(rgb))
    page.set_input_files("#file", str(src))


def _assert_not_blank(path: Path) -> None:
    from PIL import Image, ImageStat

    img = Image.open(path).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 8, f"{path} has too few colours"
    assert max(ImageStat.Stat(img).stddev) > 1.0, f"{path} looks blank"


def _assert_readable_server_lines(page) -> None:
    """Each server's status line is wide enough to read (not squeezed into a thin column)."""
    widths = page.evaluate("""() => [...document.querySelectorAll('#servers .meta')]
        .map(e => e.getBoundingClientRect().width)""")
    assert widths and min(widths) >= 150, f"server status squeezed: {widths}"


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    _assert_not_blank(path)
    return path


@pytest.fixture
def demo(browser, dist_server, devservers):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    url = f"{dist_server.url}/index.html?servers={','.join(devservers.urls)}"
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=TIMEOUT_MS)
    page.demo_url = url  # type: ignore[attr-defined]
    yield page
    context.close()


def _slow(devservers, node_delay_s):
    knobs = {"node_delay_s": node_delay_s, "progress_steps": 4, "progress_step_delay_s": 0.15}
    saved = [{k: devservers.call(getattr, srv.faults, k) for k in knobs}
             for srv in devservers.servers]
    for srv in devservers.servers:
        for k, v in knobs.items():
            devservers.call(setattr, srv.faults, k, v)
    try:
        yield devservers
    finally:
        for srv, old in zip(devservers.servers, saved, strict=True):
            for k, v in old.items():
                devservers.call(setattr, srv.faults, k, v)


@pytest.fixture
def slow_servers(devservers):
    yield from _slow(devservers, 0.4)


@pytest.fixture
def very_slow_servers(devservers):
    yield from _slow(devservers, 2.0)


# The first result image's centre pixel, decoded in the page from what the <img> shows.
RESULT_PIXEL = """
async () => {
  const img = document.querySelector("#jobs .job img.result");
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
  return [d[0], d[1], d[2]];
}
"""


def test_idle_page_lists_servers_and_has_labels(demo, devservers):
    page = demo
    _poll(page, "() => document.querySelectorAll('#servers li.server').length === 2")
    urls = page.eval_on_selector_all("#servers .url", "els => els.map(e => e.textContent)")
    assert sorted(urls) == sorted(u.rstrip("/") for u in devservers.urls)
    assert page.is_enabled("#run")
    # every form control has an accessible label
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length)
                && !el.getAttribute('aria-label')).map(el => el.id || el.name)""")
    assert unlabelled == []
    _shot(page, "idle.png")


def test_invert_job_shows_inverse_pixels(demo, tmp_path):
    page = demo
    src = tmp_path / "green.png"
    src.write_bytes(_solid_png((10, 200, 30)))
    page.set_input_files("#file", str(src))
    assert "green.png" in page.text_content("#drop-help")
    page.click("#run")
    page.wait_for_selector("#jobs .job[data-state=succeeded]", timeout=TIMEOUT_MS)
    assert _poll(page, RESULT_PIXEL) == [245, 55, 225]
    assert page.get_attribute("#jobs .job progress", "value") == "1"
    assert page.is_visible("#jobs .job a[download]")


def test_generated_test_image_runs_to_completion(demo):
    page = demo
    page.click("#run")
    page.wait_for_selector("#jobs .job[data-state=succeeded]", timeout=TIMEOUT_MS)
    assert _poll(page, RESULT_PIXEL) is not None
    _poll(page, "() => document.querySelector('#lock-ws').textContent !== '—'")
    _assert_readable_server_lines(page)
    # a screen reader can name everything in the finished job card
    nameless = page.evaluate("""() => [...document.querySelectorAll(
        '#jobs progress, #jobs button, #jobs img:not([hidden]), #jobs a')]
        .filter(el => !(el.getAttribute('aria-label') || el.getAttribute('alt')
                        || el.textContent.trim())).map(el => el.outerHTML.slice(0, 80))""")
    assert nameless == []
    assert page.get_attribute("#jobs .job progress", "aria-label").startswith("Progress of Job 1")
    shot = _shot(page, "finished-job.png")
    assert shot.exists()


def test_progress_moves_and_preview_appears(demo, slow_servers, tmp_path):
    page = demo
    _fresh_input(page, tmp_path)
    page.click("#run")
    seen = set()
    node_texts: set[str] = set()
    deadline = time.monotonic() + 30
    preview = False
    shot_taken = False
    while time.monotonic() < deadline:
        info = page.evaluate("""() => {
          const card = document.querySelector('#jobs .job');
          if (!card) return null;
          const img = card.querySelector('.job-preview');
          return { v: card.querySelector('progress').value, state: card.dataset.state || '',
                   node: card.querySelector('.job-node').textContent,
                   preview: !img.hidden && !!img.src && img.complete && img.naturalWidth > 0 };
        }""")
        if info:
            seen.add(round(info["v"], 3))
            node_texts.add(info["node"])
            preview = preview or info["preview"]
            if info["state"] == "running" and 0 < info["v"] < 1 and not shot_taken:
                _shot(page, "running-job.png")
                shot_taken = True
            if info["state"] in ("succeeded", "failed"):
                break
        page.wait_for_timeout(40)
    assert info and info["state"] == "succeeded", info
    assert len({v for v in seen if 0 < v < 1}) >= 2, f"progress did not move: {sorted(seen)}"
    # the running node's own steps are shown too ("node 2 · 3/4")
    assert any(re.fullmatch(r"node \d+ · \d+/4", t) for t in node_texts), node_texts
    assert shot_taken
    assert preview, "no live preview frame was shown while the job ran"


def test_cancel_running_job_shows_translated_message(demo, very_slow_servers, tmp_path):
    page = demo
    _fresh_input(page, tmp_path)
    page.click("#run")
    _poll(page, """() => { const c = document.querySelector('#jobs .job');
        return c && c.dataset.promptId && c.dataset.state === 'running'; }""")
    page.click("#jobs .job .job-cancel")
    page.wait_for_selector("#jobs .job[data-code=job_interrupted]", timeout=TIMEOUT_MS)
    card = page.query_selector("#jobs .job")
    assert card.get_attribute("data-state") == "failed"
    assert card.get_attribute("data-code") == "job_interrupted"
    msg = card.query_selector(".job-error")
    assert msg.is_visible()
    assert msg.text_content().startswith("The job was cancelled.")
    assert card.query_selector("img.result") is None


def test_switch_to_chinese_persists_after_reload(demo):
    page = demo
    assert page.text_content("#run") == "Run"
    page.select_option("#lang", "zh")
    assert page.text_content("#run") == "运行"
    assert page.text_content("#servers-h") == "服务器"
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=TIMEOUT_MS)
    assert page.text_content("#run") == "运行"
    assert page.input_value("#lang") == "zh"
    assert page.text_content("#boot").startswith("Python 已就绪")
    page.select_option("#lang", "en")
    assert page.text_content("#run") == "Run"
    assert page.evaluate("document.documentElement.lang") == "en"


def test_a_reload_starts_from_the_boot_cache_and_says_so(demo):
    page = demo
    first = page.text_content("#boot")
    assert first.startswith("Python ready in") and "boot cache" not in first
    assert page.evaluate("import('./web/comfyui.js').then((m) => m.bootCacheSaved)") is True
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'true'", timeout=TIMEOUT_MS)
    assert "restored from this browser's boot cache" in page.text_content("#boot")
    page.select_option("#lang", "zh")
    assert "启动缓存" in page.text_content("#boot")
    page.select_option("#lang", "en")


def test_drop_zone_opens_file_picker_from_keyboard(demo, tmp_path):
    """Enter and Space on the focused drop zone activate the file input (what opens the
    picker), other keys do not, and a picked file is the one the page will run.

    The activation is counted at the input's own click event (whose default, the native
    dialog, is prevented): whether headless Chromium then shows a chooser depends on which
    of the browser's pages it considers active, which made waiting for the dialog flaky."""
    page = demo
    page.evaluate("""() => { window.__picks = 0;
        document.querySelector('#file').addEventListener('click', (e) => {
          window.__picks++; e.preventDefault(); }); }""")
    for n, key in enumerate(("Enter", " "), start=1):
        page.focus("#drop")
        page.keyboard.press(key)
        _poll(page, f"() => window.__picks === {n}")
    page.focus("#drop")
    page.keyboard.press("a")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__picks") == 2
    src = tmp_path / "picked.png"
    src.write_bytes(_solid_png((10, 20, 30)))
    page.set_input_files("#file", str(src))
    _poll(page, "() => document.querySelector('#drop-help').textContent.includes('picked.png')")


def test_remove_server_drops_its_entry(demo, devservers):
    page = demo
    _poll(page, "() => document.querySelectorAll('#servers li.server').length === 2")
    gone = devservers.urls[1].rstrip("/")
    page.click(f"#servers button[aria-label='Remove {gone}']")
    _poll(page, f"""() => {{ const u = [...document.querySelectorAll('#servers .url')]
        .map(e => e.textContent); return u.length === 1 && !u.includes({gone!r}); }}""")


def _run_custom(page, prefix: str) -> None:
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
    page.select_option("#workflow", "custom")
    page.fill("#custom-json", json.dumps(workflow))
    page.click("#run")


def test_hostile_server_strings_are_shown_as_text_never_run(browser, dist_server):
    """A server that puts script-running markup in every string it sends (version, file
    names, node ids, error messages, validation errors): the page shows the markup as text,
    nothing runs, and the three jobs still end in their proper states."""
    from hostile_server import PAYLOAD, SCRIPT, HostileServer

    with HostileServer() as srv:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(f"{dist_server.url}/index.html?servers={srv.url}")
            page.wait_for_function("document.body.dataset.ready === 'true'", timeout=TIMEOUT_MS)
            scripts_before = page.evaluate("document.scripts.length")
            # the servers panel shows the poisoned version string
            _poll(page, "() => document.querySelector('#servers .meta')?.textContent"
                        ".includes('<')")
            for n, prefix in enumerate(("ok", "fail", "invalid"), start=1):
                _run_custom(page, prefix)
                _poll(page, f"""() => document.querySelectorAll(
                    '#jobs .job[data-done=true]').length === {n}""")
            cards = page.evaluate("""() => [...document.querySelectorAll('#jobs .job')]
                .reverse().map(c => ({state: c.dataset.state, code: c.dataset.code || '',
                                      text: c.textContent}))""")
            assert [c["state"] for c in cards] == ["succeeded", "failed", "failed"], cards
            assert cards[1]["code"] == "execution_failed"
            assert cards[2]["code"] == "invalid_workflow"
            # the markup arrived and is on the page as literal text...
            def shown(text: str) -> bool:
                return PAYLOAD in text or SCRIPT in text

            assert shown(cards[0]["text"])  # output file name in the caption
            assert shown(cards[1]["text"])  # the server's exception message
            assert shown(cards[2]["text"])  # a node_errors message
            assert shown(page.text_content("#servers"))  # the version string
            # ...and none of it became markup or ran
            page.wait_for_timeout(300)  # an onerror of a broken <img> would have fired by now
            assert page.evaluate("window.__pwned") is None
            assert page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
            assert page.evaluate("document.scripts.length") == scripts_before
            # the result image itself is the real PNG the server sent
            assert page.evaluate("""() => { const i = document.querySelector(
                '#jobs .job:last-child img.result'); return i && i.naturalWidth; }""") == 16
        finally:
            context.close()


def test_phone_width_runs_a_job_without_sideways_scrolling(browser, dist_server, devservers):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(f"{dist_server.url}/index.html?servers={','.join(devservers.urls)}")
        page.wait_for_function("document.body.dataset.ready === 'true'", timeout=TIMEOUT_MS)
        page.tap("#run")
        page.wait_for_selector("#jobs .job[data-state=succeeded] img.result")
        overflow = page.evaluate("""() => [document.documentElement.scrollWidth, innerWidth]""")
        assert overflow[0] <= overflow[1], f"page is wider than the phone: {overflow}"
        # nothing sticks out of its panel either (a long URL, a file input, a caption)
        sticking_out = page.evaluate("""() => {
          const out = [];
          for (const sec of document.querySelectorAll('main section')) {
            const edge = sec.getBoundingClientRect().right + 1;
            for (const el of sec.querySelectorAll('*')) {
              const r = el.getBoundingClientRect();
              if (r.width && r.right > edge) out.push(el.id || el.className || el.tagName);
            }
          }
          return out; }""")
        assert sticking_out == [], sticking_out
        _assert_readable_server_lines(page)
        _shot(page, "phone-finished-job.png")
    finally:
        context.close()


def test_lock_panel_follows_the_job_and_the_affinity_switch(demo, slow_servers):
    page = demo
    _poll(page, "() => document.querySelector('#lock-panel').dataset.held === 'false'")
    page.click("#run")
    server = _poll(page, """() => { const c = document.querySelector('#jobs .job');
        return c && c.dataset.state === 'running'
            && c.querySelector('.job-server').textContent; }""")
    # while the job runs in session mode its server is the locked one, and the panel says so
    _poll(page, f"""() => document.querySelector('#lock-panel').dataset.held === 'true'
        && document.querySelector('#lock-server').textContent === {server!r}""")
    assert page.text_content("#lock-ws") == "open"
    page.wait_for_selector("#jobs .job[data-state=succeeded]")
    # released after the last task: the WebSocket may stay open, the lock reason says why
    _poll(page, """() => { const why = document.querySelector('#lock-why').textContent;
        return why.includes('WebSocket') || why.startsWith('not held'); }""")
    page.check("input[name=affinity][value=job]")
    _poll(page, "() => document.querySelector('#lock-server').textContent === 'per job'")
    assert page.evaluate("async () => (await window.debugWebSocketLock()).affinity") == "job"
    page.check("input[name=affinity][value=session]")
    _poll(page, "() => document.querySelector('#lock-server').textContent !== 'per job'")


def test_connectivity_check_explains_a_refused_origin_with_the_flag(demo, dist_server):
    """A ComfyUI started without --enable-cors-header refuses the page (403, no CORS
    headers): adding it shows it down, with the exact flag for this page's origin."""
    from comfyui_devserver import ServerGroup

    page = demo
    with ServerGroup(count=1, cors_origin=None) as strict:
        url = strict.urls[0]
        page.fill("#server-url", url)
        page.click("#add-server button[type=submit]")
        _poll(page, f"""() => [...document.querySelectorAll('#servers .url')]
            .some(e => e.textContent === {url!r})""")
        page.click("#check-servers")
        entry = _poll(page, f"""() => {{
            const li = [...document.querySelectorAll('#servers li.server')]
              .find(l => l.querySelector('.url').textContent === {url!r});
            return li && li.classList.contains('down') && li.textContent; }}""")
        assert f"--enable-cors-header {dist_server.url}" in entry
        # the server really was asked and really refused the page's origin
        log = strict.servers[0].request_log
        assert strict.call(lambda: any(r.get("status") == 403 for r in log))
        page.click(f"#servers button[aria-label='Remove {url}']")
        _poll(page, f"""() => ![...document.querySelectorAll('#servers .url')]
            .some(e => e.textContent === {url!r})""")


@pytest.mark.parametrize(("workflow", "width"), [("blur", 256), ("scale", 128)])
def test_builtin_blur_and_scale_examples_run(demo, workflow, width):
    """The other two model-free examples run on the dev server (which executes them on real
    pixels): the generated 256 px test image comes back blurred at 256 px or scaled to 128."""
    page = demo
    page.select_option("#workflow", workflow)
    page.click("#run")
    page.wait_for_selector("#jobs .job[data-state=succeeded] img.result")
    got = _poll(page, """() => { const i = document.querySelector('#jobs .job img.result');
        return i.complete && i.naturalWidth && [i.naturalWidth, i.naturalHeight]; }""")
    assert got == [width, width]
