"""End to end in Debian's headless Chromium: people use the page at / as a team would, at a
desktop's size (1280×800) and a phone's (390×844).

Screenshots of each step go to test-output/browser/: look at them.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import JWT_SECRET, PASSWORD, ROOT, _free_port, running_server

CHROMIUM = "/usr/bin/chromium"
ONLINE = re.compile(r"\bonline\b")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SHOTS = ROOT / "test-output" / "browser"
INJECTION = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it")
        pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` to run the browser test")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser):
    """new_context(viewport=DESKTOP, **options): a fresh browser profile, closed after the test.
    No page may have thrown an uncaught error, nor asked for anything that is not there (the
    favicon, say)."""
    made = []

    def new(viewport=DESKTOP, **options):
        made.append(browser.new_context(viewport=viewport, **options))
        return made[-1]

    yield new
    pages = [page for context in made for page in context.pages]
    for context in made:
        context.close()
    assert [error for page in pages for error in getattr(page, "errors", [])] == []
    assert [url for page in pages for url in getattr(page, "not_found", [])] == []


def _page(context):
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    page.errors, page.not_found = [], []
    page.on("pageerror", lambda error: page.errors.append(f"{page.url}: {error}"))
    page.on("response", lambda response: response.status == 404 and page.not_found.append(response.url))
    return page


def _person(new_context, url, name, email=None, init_script=None, setup=None, **context_options):
    """A fresh browser profile that signs `name` up through the page; `setup(context)` first."""
    context = new_context(**context_options)
    if init_script:
        context.add_init_script(init_script)
    if setup:
        setup(context)
    page = _page(context)
    page.goto(url)
    page.fill("#name", name)
    page.fill("#email", email or f"{name}@example.com")
    page.fill("#password", PASSWORD)
    page.click("#register")
    expect(page.locator("#app")).to_be_visible()
    return page


def _log_in(new_context, url, name, **context_options):
    page = _page(new_context(**context_options))
    page.goto(url)
    page.fill("#email", f"{name}@example.com")
    page.fill("#password", PASSWORD)
    page.click("#login")
    expect(page.locator("#app")).to_be_visible()
    return page


def _start_chat(page, names, group_name=""):
    page.click("#new-chat summary")
    for name in names:
        page.locator("#people").get_by_label(name, exact=True).check()
    page.fill("#group-name", group_name)
    page.click("#start-chat")


def _send(page, text):
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator(".message.mine .text").last).to_have_text(text)


def _chat(page, title):
    return page.locator("#chat-list li", has_text=title)


def _shot(page, name):
    page.screenshot(path=SHOTS / f"{name}.png")


def _sql(database_url, query, *args):
    """Run one statement on a thread of its own: Playwright's sync API holds this thread's event loop."""

    async def run():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


def _uuid(page):
    return page.evaluate("sessionStorage.getItem('me') || localStorage.getItem('me')")


def _seed_chat(database_url, members, texts, kind="group", name=None, minutes_apart=1, minutes_ago=0):
    """A chat of these members (uuids) holding `texts`, sent in turn by each member, the last
    one `minutes_ago` and each one `minutes_apart` before the next; all read. Its id."""
    private_key = ":".join(sorted(members)) if kind == "private" else None
    chat_id = _sql(
        database_url,
        "insert into chats (type, name, private_key) values ($1, $2, $3) returning id",
        kind,
        name,
        private_key,
    )
    _sql(database_url, "insert into chat_members (chat_id, user_id) select $1, unnest($2::uuid[])", chat_id, members)
    _sql(
        database_url,
        """
        insert into messages (chat_id, sender_id, text, sent_at, is_read)
        select $1, ($2::uuid[])[1 + (i - 1) % cardinality($2::uuid[])], t,
               now() - ((cardinality($3::text[]) - i) * $4 + $5) * interval '1 minute', true
        from unnest($3::text[]) with ordinality as m(t, i)
        """,
        chat_id,
        members,
        texts,
        minutes_apart,
        minutes_ago,
    )
    return chat_id


def _no_page_scroll(page):
    """The document itself never scrolls: only the chat list and the message pane do."""
    assert page.evaluate("document.scrollingElement.scrollHeight <= innerHeight")


def _in_place(page, *selectors):
    """Each of these is on screen, whole."""
    height = page.viewport_size["height"]
    for selector in selectors:
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= height, (selector, box, height)


def _pane_at_bottom(page):
    return page.evaluate(
        "(s => s.scrollHeight - s.scrollTop - s.clientHeight < 2)(document.getElementById('scroller'))"
    )


def _tab_to(page, selector, limit=100):
    """Press Tab until the keyboard focus is on `selector`."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    pytest.fail(f"Tab never reached {selector}")


def _hide_tab(page, hidden):
    """The tab goes to the background (hidden) or comes back. Every Playwright page counts as
    a visible foreground tab, so the page is told what a browser would tell it."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            Object.defineProperty(document, "visibilityState", {configurable: true,
                get: () => hidden ? "hidden" : "visible"});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


# --- The core loop -------------------------------------------------------------------------------


@pytest.fixture
def empty_server(fresh_database, tmp_path):
    """A server on a database of its own, with nobody in it yet: the first user really is alone."""
    url = fresh_database
    limits = {"AUTH_RATE_PER_MIN": "100000", "RATE_BURST": "100000", "RATE_PER_SEC": "100000"}
    with running_server(tmp_path / "server.log", DATABASE_URL=url, JWT_SECRET=JWT_SECRET, **limits) as server:
        yield server
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_team_chats_in_the_browser(empty_server, new_context):
    server = empty_server
    tag = uuid.uuid4().hex[:6]
    alice_name, bob_name, carol_name = f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"
    alice = _person(new_context, server.url, alice_name)

    # The first to sign up: her name (not her email) in the header, and a word on what to do next.
    expect(alice.locator("#me")).to_have_text(alice_name)
    expect(alice.locator("#no-chats")).to_contain_text("No chats yet")
    expect(alice.locator("#pane-empty")).to_contain_text("Start one")
    alice.click("#start-one")  # opens the picker: nobody to pick, and it says why
    expect(alice.locator("#people-empty")).to_contain_text("Nobody else has signed up yet")
    expect(alice.locator("#start-chat")).to_be_hidden()
    _shot(alice, "01-alice-alone")

    bob = _person(new_context, server.url, bob_name)
    carol = _person(new_context, server.url, carol_name, viewport=PHONE)

    # The picker is current when it opens again: no reload needed to see who joined since.
    alice.click("#new-chat summary")  # closes it
    alice.click("#new-chat summary")
    expect(alice.locator("#people").get_by_label(bob_name, exact=True)).to_be_visible()
    expect(alice.locator("#people").get_by_label(carol_name, exact=True)).to_be_visible()
    expect(alice.locator("#people-empty")).to_be_hidden()

    # Refusals say why, next to what caused them.
    alice.click("#start-chat")
    expect(alice.locator("#start-chat-error")).to_contain_text("Tick the person")
    alice.locator("#people").get_by_label(bob_name, exact=True).check()
    alice.locator("#people").get_by_label(carol_name, exact=True).check()
    alice.click("#start-chat")
    expect(alice.locator("#group-name-error")).to_contain_text("give it a name")
    expect(alice.locator("#group-name")).to_be_focused()
    expect(alice.locator("#start-chat-error")).to_be_hidden()
    _shot(alice, "02-alice-group-needs-a-name")
    alice.locator("#people").get_by_label(carol_name, exact=True).uncheck()

    # alice starts a private chat with bob: an empty chat says what to do.
    alice.click("#start-chat")
    expect(alice.locator("#chat-title")).to_have_text(bob_name)
    expect(alice.locator("#pane-empty")).to_contain_text("Say hello")
    expect(alice.locator("#new-chat")).not_to_have_attribute("open", "")
    _shot(alice, "03-alice-new-chat")

    # She writes; bob sees it arrive.
    _send(alice, "hello bob")
    mine = alice.locator(".message.mine", has_text="hello bob")
    expect(mine).to_contain_text("delivered")
    expect(alice.locator("#pane-empty")).to_be_hidden()
    expect(alice.locator(".day")).to_have_text(["Today"])
    expect(_chat(bob, alice_name).locator(".badge")).to_have_text("1")
    # The full date and time on hover.
    assert re.search(r"\d{4}", mine.locator("time").get_attribute("title"))
    _shot(bob, "04-bob-sees-unread")

    # bob opens it: it is marked read, and alice's mark flips.
    _chat(bob, alice_name).click()
    expect(bob.locator(".message", has_text="hello bob")).to_be_visible()
    expect(_chat(bob, alice_name).locator(".badge")).to_have_count(0)
    expect(mine).to_have_attribute("data-status", "read")
    expect(mine).to_contain_text("read")
    _shot(alice, "05-alice-sees-read")
    # bob is online: a dot by his name in alice's chat list and people list.
    expect(_chat(alice, bob_name)).to_have_class(ONLINE)
    expect(alice.locator("#people li", has_text=bob_name)).to_have_class(ONLINE)

    # Shift+Enter is a new line; live replies arrive in the open chat.
    bob.fill("#text", "line one")
    bob.press("#text", "Shift+Enter")
    bob.type("#text", "line two")
    bob.press("#text", "Enter")
    expect(alice.locator(".message:not(.mine) .text").last).to_have_text("line one\nline two")

    # A group of three: everyone gets the message; markup in it is shown as text, never run.
    _start_chat(alice, [bob_name, carol_name], group_name=f"trio-{tag}")
    expect(alice.locator("#chat-title")).to_have_text(f"trio-{tag}")
    _send(alice, "hello trio 👋")
    _send(alice, INJECTION)
    for page in (bob, carol):
        _chat(page, f"trio-{tag}").click()
        expect(page.locator(".message .text", has_text="hello trio")).to_be_visible()
        expect(page.locator(".message .text").last).to_have_text(INJECTION)
        expect(page.locator("#messages img")).to_have_count(0)
    _shot(bob, "06-bob-group-with-injection")
    _in_place(carol, "#back", "#chat-title", "#composer")
    _shot(carol, "07-carol-phone")
    carol.click("#back")
    expect(_chat(carol, f"trio-{tag}")).to_be_visible()

    # A reload keeps the session and the chats.
    bob.reload()
    expect(bob.locator("#app")).to_be_visible()
    expect(bob.locator("#chat-list li")).to_have_count(2)

    # bob leaves: his dot goes out on alice's page.
    bob.close()
    expect(_chat(alice, bob_name)).not_to_have_class(ONLINE)
    expect(alice.locator("#people li", has_text=bob_name)).not_to_have_class(ONLINE)


def test_sign_up_says_everything_wrong_at_once(server, new_context):
    context = new_context()
    page = _page(context)
    page.goto(server.url)
    page.fill("#email", "not-an-email")
    page.fill("#password", "short")
    page.click("#register")
    expect(page.locator("#name-error")).to_contain_text("Enter your name")
    expect(page.locator("#email-error")).to_contain_text("like name@example.com")
    expect(page.locator("#password-error")).to_have_text("Use at least 8 characters.")
    expect(page.locator("#name")).to_be_focused()
    _shot(page, "10-sign-up-errors")

    # What only the server knows is told next to its field too.
    taken = f"taken-{uuid.uuid4().hex[:6]}"
    httpx.post(f"{server.url}/register", json={"name": taken, "email": f"{taken}@example.com", "password": PASSWORD})
    page.fill("#name", taken)
    page.fill("#email", f"{taken}@example.com")
    page.fill("#password", PASSWORD)
    page.click("#register")
    expect(page.locator("#email-error")).to_contain_text("already an account")
    expect(page.locator("#name-error")).to_be_hidden()
    expect(page.locator("#password-error")).to_be_hidden()

    # Kept signed in on this device: another tab opens signed in. Without it, a new tab asks.
    page.check("#remember")
    page.click("#login")
    expect(page.locator("#me")).to_have_text(taken)
    second_tab = _page(context)
    second_tab.goto(server.url)
    expect(second_tab.locator("#app")).to_be_visible()
    second_tab.close()
    page.click("#logout")
    expect(page.locator("#auth")).to_be_visible()
    page.fill("#email", f"{taken}@example.com")
    page.fill("#password", PASSWORD)
    page.click("#login")
    expect(page.locator("#app")).to_be_visible()
    fresh_tab = _page(context)
    fresh_tab.goto(server.url)
    expect(fresh_tab.locator("#auth")).to_be_visible()


# --- Long chats ----------------------------------------------------------------------------------


def test_a_long_chat_scrolls_in_its_pane_at_any_size(server, new_context, database_url):
    """200 messages over eight days: the pane alone scrolls, older pages load at the top, and
    new messages are followed at the bottom or announced by a pill when you have scrolled up."""
    tag = uuid.uuid4().hex[:6]
    dee_name, eli_name = f"dee-{tag}", f"eli-{tag}"
    dee = _person(new_context, server.url, dee_name)
    eli = _person(new_context, server.url, eli_name)
    texts = [
        f"message {i:03}" + (": a longer one, to see a line wrap in its bubble" * (i % 7 == 0)) for i in range(1, 201)
    ]
    _seed_chat(database_url, [_uuid(eli), _uuid(dee)], texts, kind="private", minutes_apart=57)

    for page in (dee, eli):
        page.reload()
        _chat(page, dee_name if page is eli else eli_name).click()
    texts_shown = dee.locator(".message .text")
    expect(texts_shown).to_have_count(50)
    expect(texts_shown.last).to_have_text("message 200")
    expect(dee.locator(".day", has_text="Today")).to_have_count(1)
    expect(dee.locator(".day", has_text="Yesterday")).to_have_count(1)
    expect(texts_shown.last).to_be_in_viewport()
    _no_page_scroll(dee)
    _in_place(dee, "#conversation header", "#sidebar header", "#composer")
    assert _pane_at_bottom(dee)
    _shot(dee, "20-long-chat-desktop")

    # Scrolling to the top loads the older pages, and what you were reading stays in view.
    dee.locator("#scroller").hover()
    while texts_shown.count() < 200:
        shown, first = texts_shown.count(), texts_shown.first.text_content()
        dee.mouse.wheel(0, -100_000)
        expect(texts_shown).not_to_have_count(shown)
        expect(dee.locator(".message .text", has_text=first)).to_be_in_viewport()
    expect(texts_shown.first).to_have_text("message 001")
    dee.mouse.wheel(0, -100_000)  # a page past the end: nothing older
    expect(dee.locator("#older")).to_be_hidden()
    assert dee.locator(".day").count() >= 8
    _no_page_scroll(dee)
    _in_place(dee, "#conversation header", "#composer")
    _shot(dee, "21-long-chat-top")

    # Scrolled up, a new message brings the pill, not a jump; the pill takes you down.
    _send(eli, "are you there?")
    expect(dee.locator("#new-messages")).to_be_visible()
    expect(texts_shown.last).to_have_text("are you there?")
    expect(texts_shown.last).not_to_be_in_viewport()
    _shot(dee, "22-new-messages-pill")
    dee.click("#new-messages")
    expect(texts_shown.last).to_be_in_viewport()
    expect(dee.locator("#new-messages")).to_be_hidden()
    # At the bottom, the view follows new messages by itself.
    _send(eli, "one more")
    expect(texts_shown.last).to_have_text("one more")
    expect(texts_shown.last).to_be_in_viewport()
    expect(dee.locator("#new-messages")).to_be_hidden()

    # On a phone: the same, with the back button in place.
    phone = _log_in(new_context, server.url, dee_name, viewport=PHONE)
    _chat(phone, eli_name).click()
    expect(phone.locator(".message .text").last).to_have_text("one more")
    expect(phone.locator(".message .text").last).to_be_in_viewport()
    _no_page_scroll(phone)
    _in_place(phone, "#back", "#chat-title", "#composer")
    assert _pane_at_bottom(phone)
    _shot(phone, "23-long-chat-phone")
    phone.locator("#scroller").hover()
    phone.mouse.wheel(0, -100_000)
    expect(phone.locator(".message .text")).to_have_count(100)
    _no_page_scroll(phone)
    _in_place(phone, "#back", "#composer")


def test_a_long_unread_list_is_fetched_past_the_first_frame(server, new_context, database_url):
    """1,200 unread: the first frame carries 500 of them, the page fetches the rest from GET /unread."""
    tag = uuid.uuid4().hex[:6]
    reader = _person(new_context, server.url, f"reader-{tag}")
    writer = _person(new_context, server.url, f"writer-{tag}")
    reader_id, writer_id = _uuid(reader), _uuid(writer)
    chat_id = _sql(database_url, "insert into chats (type, name) values ('group', $1) returning id", f"backlog-{tag}")
    _sql(
        database_url,
        "insert into chat_members (chat_id, user_id) values ($1, $2::uuid), ($1, $3::uuid)",
        chat_id,
        reader_id,
        writer_id,
    )
    _sql(
        database_url,
        """
        with sent as (
            insert into messages (chat_id, sender_id, text)
            select $1, $2::uuid, 'backlog ' || i from generate_series(1, 1200) i returning id
        )
        insert into unread (user_id, message_id) select $3::uuid, id from sent
        """,
        chat_id,
        writer_id,
        reader_id,
    )
    reader.reload()
    expect(_chat(reader, f"backlog-{tag}").locator(".badge")).to_have_text("1200")
    expect(reader).to_have_title("(1200) chat")
    _shot(reader, "24-reader-sees-1200-unread")


# --- Another tab, and the server going away -----------------------------------------------------

# A stand-in for the browser's Notification API that records what the page shows, and
# whether it asked for permission.
NOTIFICATIONS = """
window.shown = [];
window.asked = 0;
window.Notification = class {
    static permission = "default";
    static async requestPermission() { window.asked += 1; return (this.permission = "granted"); }
    constructor(title, options) { window.shown.push({title, body: options.body}); }
    close() {}
};
"""


def test_a_hidden_tab_counts_unread_in_its_title_and_notifies(server, new_context):
    tag = uuid.uuid4().hex[:6]
    ann_name, ben_name = f"ann-{tag}", f"ben-{tag}"
    ann = _person(new_context, server.url, ann_name)
    ben = _person(new_context, server.url, ben_name, init_script=NOTIFICATIONS)

    # Permission is asked for from a button, never on load.
    expect(ben.locator("#notify")).to_be_visible()
    assert ben.evaluate("window.asked") == 0
    ben.click("#notify")
    expect(ben.locator("#notify")).to_be_hidden()
    assert ben.evaluate("window.asked") == 1

    _start_chat(ann, [ben_name])
    _send(ann, "first")
    _chat(ben, ann_name).click()
    expect(ben.locator(".message .text").last).to_have_text("first")
    expect(ben).to_have_title("chat")

    # ben switches to another tab: what arrives stays unread, counted in the title.
    _hide_tab(ben, True)
    for text in ("are you", "still", "there?"):
        _send(ann, text)
    expect(ben).to_have_title("(3) chat")
    expect(ben.locator("#favicon")).to_have_attribute("href", "/static/favicon-unread.svg")
    assert ben.evaluate("window.shown") == [{"title": ann_name, "body": t} for t in ("are you", "still", "there?")]
    expect(ann.locator(".message.mine").last).to_have_attribute("data-status", "unread")

    # He comes back: read, and the title and icon say so.
    _hide_tab(ben, False)
    expect(ben).to_have_title("chat")
    expect(ben.locator("#favicon")).to_have_attribute("href", "/static/favicon.svg")
    expect(ann.locator(".message.mine").last).to_have_attribute("data-status", "read")


class OwnServer:
    """`python chat.py` of this test's own, on the session's database: it can be stopped and
    started again on the same port, as an operator restarts a server."""

    def __init__(self, database_url, log_path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATABASE_URL": database_url,
            "JWT_SECRET": JWT_SECRET,
            "BCRYPT_ROUNDS": "4",
            "AUTH_RATE_PER_MIN": "100000",
            "SHUTDOWN_GRACE_SECONDS": "0.2",
        }
        self.process = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "chat.py"], cwd=ROOT, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/docs/openapi.json").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"server did not start:\n{self.log_path.read_text()}")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def own_server(database_url, tmp_path):
    own = OwnServer(database_url, tmp_path / "server.log")
    own.start()
    yield own
    if own.process.poll() is None:
        own.stop()
    assert "Traceback" not in own.log_path.read_text()


def _countdown(page):
    """The seconds the banner says are left before the next try."""
    expect(page.locator("#reconnect")).to_be_visible()
    return int(re.search(r"in (\d+) s", page.locator("#status").text_content()).group(1))


def test_reconnecting_after_a_restart(own_server, new_context):
    tag = uuid.uuid4().hex[:6]
    fay_name, gus_name = f"fay-{tag}", f"gus-{tag}"
    httpx.post(
        f"{own_server.url}/register",
        json={"name": gus_name, "email": f"{gus_name}@example.com", "password": PASSWORD},
    ).raise_for_status()
    fay = _person(new_context, own_server.url, fay_name)
    _start_chat(fay, [gus_name])
    _send(fay, "before the restart")
    fay.fill("#text", "typed while the server was away")

    # The server stops: the banner counts down to the next try, the composer is marked
    # offline, and what was typed stays.
    own_server.stop()
    expect(fay.locator("#status")).to_contain_text("Reconnecting in")
    expect(fay.locator("#composer")).to_have_class(re.compile(r"\boffline\b"))
    expect(fay.locator("#send")).to_be_disabled()
    expect(fay.locator("#composer-note")).to_contain_text("Offline")
    _in_place(fay, "#status", "#composer")
    _shot(fay, "30-fay-offline")

    # Each failed try waits longer, but never more than 10 s.
    for _ in range(6):
        fay.click("#reconnect")
        assert _countdown(fay) <= 10
    seconds = _countdown(fay)
    assert seconds >= 5
    expect(fay.locator("#status")).to_contain_text(f"in {seconds - 1} s", timeout=2_000)  # it counts down

    # The server is back, but the page's next socket is still turned away (and its countdown
    # restarts). "Reconnect now" does not wait for the countdown.
    turned_away = [True]
    fay.route_web_socket(re.compile(r"/connect\?"), lambda ws: ws.close() if turned_away[0] else ws.connect_to_server())
    own_server.start()
    fay.click("#reconnect")
    assert _countdown(fay) >= 4
    turned_away[0] = False
    opened = []  # sockets and requests, in the order the page made them
    fay.on("websocket", lambda ws: opened.append(ws.url))
    fay.on("request", lambda request: opened.append(request.url))
    fay.click("#reconnect")
    expect(fay.locator("#status")).to_be_hidden(timeout=2_000)
    expect(fay.locator("#composer")).not_to_have_class(re.compile(r"\boffline\b"))
    # Straight to the socket: no request before it (the people list is asked for after it).
    assert "/connect?" in opened[0], opened
    expect(fay.locator("#text")).to_have_value("typed while the server was away")
    fay.press("#text", "Enter")
    expect(fay.locator(".message.mine .text").last).to_have_text("typed while the server was away")
    expect(fay.locator(".message.mine")).to_have_count(2)

    # A new password set elsewhere closes the page's socket and retires its token: the next
    # socket is refused, the page asks HTTP why (401), and asks to sign in again at once.
    login = {"email": f"{fay_name}@example.com", "password": PASSWORD}
    token = httpx.post(f"{own_server.url}/login", json=login).json()["access_token"]
    httpx.post(
        f"{own_server.url}/change_password",
        json={"old_password": PASSWORD, "new_password": PASSWORD + "-new"},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()
    expect(fay.locator("#register")).to_be_visible(timeout=5_000)


# --- A dropped socket resumes where it was ------------------------------------------------------


class Line:
    """A browser profile's sockets, through Playwright (route_web_socket) with their frames
    untouched: the test cuts the open one, as a network that drops would, and turns new ones
    away while the person is `away`."""

    def __init__(self):
        self.away = False
        self.sockets = []

    def attach(self, context):
        context.route_web_socket(re.compile(r"/connect\?"), self._route)

    def _route(self, ws):
        self.sockets.append(ws)
        if self.away:
            ws.close()
        else:
            ws.connect_to_server()

    def cut(self, page):
        self.away = True
        self.sockets[-1].close()
        expect(page.locator("#status")).to_be_visible()

    def mend(self, page):
        """Back: "Reconnect now" (the next try may be under way already)."""
        self.away = False
        page.click("#reconnect")
        expect(page.locator("#status")).to_be_hidden(timeout=15_000)


def _sockets(page):
    """Every socket the page opens from now on: its url and the frames it got, in order."""
    opened = []

    def record(ws):
        socket = SimpleNamespace(url=ws.url, frames=[])
        opened.append(socket)
        ws.on("framereceived", lambda payload: socket.frames.append(json.loads(payload)))

    page.on("websocket", record)
    return opened


def _connected(opened):
    """The newest socket that got its unread frame, that frame, and the missed frames after it."""
    socket = [s for s in opened if s.frames][-1]
    first = socket.frames[0]
    assert first["action"] == "unread_messages"
    return socket, first, socket.frames[1 : 1 + first.get("missed", 0)]


def _requests(page, path):
    """The urls of the page's requests whose path matches `path`, from now on (a list the test
    may clear)."""
    seen = []
    page.on("request", lambda request: re.fullmatch(path, urlsplit(request.url).path) and seen.append(request.url))
    return seen


def _stored_cursor(page):
    """The cursor the page keeps for its user."""
    return page.evaluate(f"sessionStorage.getItem('cursor:{_uuid(page)}')")


def test_a_dropped_socket_catches_up_without_a_reload(server, new_context, database_url):
    """bob's socket drops; alice sends, edits, deletes and reads meanwhile, and bob's phone reads
    one of her messages. Reconnecting with since=, bob's page shows all of it from the missed
    frames alone: no /history, no /chats; what the phone read is not unread, and nothing missed
    makes a notification."""
    tag = uuid.uuid4().hex[:6]
    alice_name, bob_name, group = f"alice-{tag}", f"bob-{tag}", f"crew-{tag}"
    line = Line()
    alice = _person(new_context, server.url, alice_name)
    bob = _person(new_context, server.url, bob_name, init_script=NOTIFICATIONS, setup=line.attach)
    bob.click("#notify")  # notifications allowed (the stand-in records them)
    sockets, history, chats = _sockets(bob), _requests(bob, r"/history/\d+"), _requests(bob, "/chats")

    _start_chat(alice, [bob_name])
    expect(alice.locator("#chat-title")).to_have_text(bob_name)
    _send(alice, "first from alice")
    _send(alice, "a word to take back")
    _start_chat(alice, [bob_name], group_name=group)  # alice looks at the group from now on
    expect(alice.locator("#chat-title")).to_have_text(group)
    _chat(bob, alice_name).click()
    _send(bob, "bob one")
    _send(bob, "bob two")
    expect(_chat(alice, bob_name).locator(".badge")).to_have_text("2")
    expect(_message(bob, "bob two")).to_have_attribute("data-status", "unread")
    cursor = _stored_cursor(bob)
    assert cursor

    # bob's socket drops: the server sees him go (his dot goes out on alice's page).
    line.cut(bob)
    expect(_chat(alice, bob_name)).not_to_have_class(ONLINE)
    # Meanwhile his phone reads one message of the group's, and leaves the next one unread.
    phone = _log_in(new_context, server.url, bob_name, viewport=PHONE)
    _send(alice, "group: read on the phone")
    _chat(phone, group).click()
    expect(phone.locator(".message .text").last).to_have_text("group: read on the phone")
    expect(_message(alice, "group: read on the phone")).to_have_attribute("data-status", "read")
    phone.click("#back")
    _send(alice, "group: still unread")
    # alice reads bob's messages, sends, edits and deletes.
    _chat(alice, bob_name).click()
    expect(_chat(alice, bob_name).locator(".badge")).to_have_count(0)
    _send(alice, "sent while you were away")
    first = _message(alice, "first from alice")
    first.hover()
    _button(first, "Edit").click()
    first.locator("textarea").fill("first from alice, edited")
    first.locator("textarea").press("Enter")
    expect(first.locator(".edited")).to_be_visible()
    _delete(alice, _message(alice, "a word to take back"))
    expect(alice.locator(".message", has_text="a word to take back")).to_have_count(0)
    expect(bob.locator(".message", has_text="sent while you were away")).to_have_count(0)  # bob is away

    # bob is back, his tab in the background: his page catches up, no reload.
    _hide_tab(bob, True)
    history.clear()
    chats.clear()
    line.mend(bob)
    expect(bob.locator(".message .text")).to_have_text(
        ["first from alice, edited", "bob one", "bob two", "sent while you were away"]
    )
    expect(_message(bob, "first from alice").locator(".edited")).to_be_visible()
    expect(_message(bob, "bob one")).to_have_attribute("data-status", "read")
    expect(_message(bob, "bob two").locator(".mark")).to_have_text(" ✓✓ read")
    # Unread: alice's message in the open chat (his tab is hidden) and the group's second
    # message; not the one his phone read.
    expect(_chat(bob, alice_name).locator(".badge")).to_have_text("1")
    expect(_chat(bob, group).locator(".badge")).to_have_text("1")
    expect(_chat(bob, group).locator(".preview")).to_have_text("group: still unread")
    expect(bob).to_have_title("(2) chat")
    assert bob.evaluate("window.shown") == []  # nothing missed is news to notify of
    socket, unread, missed = _connected(sockets)
    assert f"since={cursor}" in socket.url, socket.url
    assert (unread["resumed"], unread["cursor"]) == (True, cursor)
    assert len(missed) == unread["missed"]
    assert [frame["action"] for frame in missed][-6:] == [
        "new_message",  # read on the phone
        "new_message",  # still unread
        "messages_read",  # alice read "bob one" and "bob two"
        "new_message",
        "message_edited",
        "message_deleted",
    ]
    assert all(frame["cursor"] for frame in missed)
    assert history == [] and chats == []
    assert _stored_cursor(bob) == missed[-1]["cursor"]

    # Live again: a new message from alice notifies; back in the tab, all is read.
    _send(alice, "and one more, live")
    expect(bob).to_have_title("(3) chat")
    assert bob.evaluate("window.shown") == [{"title": alice_name, "body": "and one more, live"}]
    _hide_tab(bob, False)
    expect(bob).to_have_title("(1) chat")
    expect(_message(alice, "and one more, live")).to_have_attribute("data-status", "read")
    _shot(bob, "35-bob-caught-up")

    # Away for longer than the server keeps events (as if pruned): the cursor cannot be resumed,
    # and the page loads its chats and the open chat afresh instead.
    line.cut(bob)
    _send(alice, "after the events were pruned")
    before = _sql(database_url, "select pruned_through from stream")
    _sql(database_url, "update stream set pruned_through = (select max(id) from events)")
    try:
        history.clear()
        chats.clear()
        line.mend(bob)
        expect(bob.locator(".message .text").last).to_have_text("after the events were pruned")
    finally:
        _sql(database_url, "update stream set pruned_through = $1", before)
    socket, unread, missed = _connected(sockets)
    assert "since=" in socket.url and unread["resumed"] is False and missed == []
    assert history and chats
    expect(bob.locator(".message .text")).to_have_count(6)
    expect(_chat(bob, group).locator(".badge")).to_have_text("1")
    assert _stored_cursor(bob) == unread["cursor"] != cursor


def test_a_reload_resumes_and_logging_out_forgets_the_cursor(server, new_context):
    tag = uuid.uuid4().hex[:6]
    cam_name, dev_name = f"cam-{tag}", f"dev-{tag}"
    line = Line()
    cam = _person(new_context, server.url, cam_name)
    dev = _person(new_context, server.url, dev_name, setup=line.attach)
    sockets = _sockets(dev)
    _start_chat(cam, [dev_name])
    _send(cam, "before the reload")
    expect(_chat(dev, cam_name).locator(".badge")).to_have_text("1")

    # dev's socket drops, a message comes meanwhile, and dev reloads the tab: the reload
    # resumes from the cursor kept in sessionStorage, and counts the message once.
    line.cut(dev)
    _send(cam, "while dev reloads")
    line.away = False
    dev.reload()
    expect(_chat(dev, cam_name).locator(".badge")).to_have_text("2")
    expect(_chat(dev, cam_name).locator(".preview")).to_have_text("while dev reloads")
    expect(dev).to_have_title("(2) chat")
    socket, unread, missed = _connected(sockets)
    assert "since=" in socket.url and unread["resumed"] is True
    assert missed[-1]["action"] == "new_message" and missed[-1]["data"]["text"] == "while dev reloads"
    _chat(dev, cam_name).click()
    expect(dev.locator(".message .text")).to_have_text(["before the reload", "while dev reloads"])
    expect(dev).to_have_title("chat")

    # A cursor the server cannot resume (of another database, say): the page loads afresh.
    dev.evaluate("sessionStorage.setItem('cursor:' + sessionStorage.getItem('me'), 'elsewhere.1')")
    dev.reload()
    expect(_chat(dev, cam_name).locator(".preview")).to_have_text("while dev reloads")
    socket, unread, _ = _connected(sockets)
    assert "since=elsewhere.1" in socket.url and unread["resumed"] is False
    expect(dev.locator("#status")).to_be_hidden()
    assert _stored_cursor(dev) == unread["cursor"]

    # Logging out forgets the cursor: the next session in this tab starts without one.
    dev.click("#logout")
    expect(dev.locator("#auth")).to_be_visible()
    assert dev.evaluate("Object.keys(sessionStorage).filter(key => key.startsWith('cursor:'))") == []
    dev.fill("#email", f"{dev_name}@example.com")
    dev.fill("#password", PASSWORD)
    dev.click("#login")
    expect(_chat(dev, cam_name)).to_be_visible()
    socket, unread, _ = _connected(sockets)
    assert "since=" not in socket.url and unread["resumed"] is False


# --- Looks and keys ------------------------------------------------------------------------------


def test_the_page_in_light_and_dark(server, new_context, database_url):
    """A team's morning, for the README's screenshots (docs/web-client-*.png are copies of these)."""
    tag = uuid.uuid4().hex[:6]
    maya = _person(new_context, server.url, "Maya Chen", email=f"maya-{tag}@example.com")
    people = {}
    for name in ("Sam Okafor", "Priya Raman", "Jonas Berg"):
        email = f"{name.split()[0].lower()}-{tag}@example.com"
        body = {"name": name, "email": email, "password": PASSWORD}
        people[name] = httpx.post(f"{server.url}/register", json=body).json()["user_uuid"]
    me = _uuid(maya)
    _seed_chat(
        database_url,
        [people["Jonas Berg"], me],
        ["Can you look at the invoice export?", "Sure, after lunch"],
        kind="private",
        minutes_apart=90,
        minutes_ago=26 * 60,
    )
    _seed_chat(
        database_url,
        [people["Priya Raman"], me],
        ["Lunch at the usual place? 🍜"],
        kind="private",
        minutes_ago=40,
    )
    _sql(
        database_url,
        "insert into unread (user_id, message_id) select $1::uuid, max(id) from messages where sender_id = $2::uuid",
        me,
        people["Priya Raman"],
    )
    launch = [
        (people["Sam Okafor"], "Release checklist is in the doc, please tick what you own ✅"),
        (me, "Migrations are done and tested on staging."),
        (people["Priya Raman"], "Screenshots for the release notes are coming today 📸"),
        (people["Sam Okafor"], "Ship day 🚀"),
        (me, "Deploy is green on staging. Going out within the hour."),
        (people["Priya Raman"], "🎉 nice. I'll watch the error dashboard."),
        (people["Sam Okafor"], "Customers with the old app get the banner, right?"),
        (me, "Yes, the banner shows below version 2.3."),
    ]
    chat_id = _sql(database_url, "insert into chats (type, name) values ('group', 'Launch') returning id")
    members = [me, *people.values()]
    _sql(database_url, "insert into chat_members (chat_id, user_id) select $1, unnest($2::uuid[])", chat_id, members)
    ids = []
    for i, (sender, text) in enumerate(launch):
        hours = 20 if i < 3 else (len(launch) - i) * 0.1  # three yesterday, the rest in the last hour
        reply_to = ids[-1] if i == len(launch) - 1 else None  # Maya's answer quotes Sam's question
        ids.append(
            _sql(
                database_url,
                "insert into messages (chat_id, sender_id, text, sent_at, is_read, reply_to) "
                "values ($1, $2::uuid, $3, now() - $4 * interval '1 hour', true, $5) returning id",
                chat_id,
                sender,
                text,
                hours,
                reply_to,
            )
        )
    maya.reload()
    _chat(maya, "Launch").click()
    expect(maya.locator(".message .text").last).to_have_text("Yes, the banner shows below version 2.3.")
    expect(maya.locator(".message .quote").last).to_contain_text("Sam Okafor")
    expect(maya.locator("#me")).to_have_text("Maya Chen")
    background = "getComputedStyle(document.body).backgroundColor"
    light = maya.evaluate(background)
    _shot(maya, "40-light")

    # prefers-color-scheme: dark turns the page dark, text light.
    maya.emulate_media(color_scheme="dark")
    dark = maya.evaluate(background)
    assert dark != light
    assert sum(map(int, re.findall(r"\d+", dark)[:3])) < 120, dark
    assert sum(map(int, re.findall(r"\d+", maya.evaluate("getComputedStyle(document.body).color"))[:3])) > 600
    _shot(maya, "41-dark")

    # Searching, in both schemes (docs/web-client-search.png is a copy of the light one).
    maya.fill("#search-input", "stag")
    expect(maya.locator("#result-list li")).to_have_count(2)
    expect(maya.locator("#result-list mark")).to_have_text(["staging", "staging"])
    _shot(maya, "43-search-dark")
    maya.emulate_media(color_scheme="light")
    _shot(maya, "42-search-light")


def test_keyboard_only(server, new_context):
    """Start a chat and send a message without the mouse; the focus always shows."""
    tag = uuid.uuid4().hex[:6]
    kim_name, lee_name = f"kim-{tag}", f"lee-{tag}"
    lee = _person(new_context, server.url, lee_name)
    kim = _person(new_context, server.url, kim_name)

    _tab_to(kim, "#new-chat summary")
    kim.keyboard.press("Enter")
    _tab_to(kim, f'#people input[value="{_uuid(lee)}"]')
    kim.keyboard.press("Space")
    _tab_to(kim, "#start-chat")
    outline = kim.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", outline  # the focus is visible
    kim.keyboard.press("Enter")
    expect(kim.locator("#chat-title")).to_have_text(lee_name)
    expect(kim.locator("#text")).to_be_focused()
    kim.keyboard.type("sent without a mouse")
    kim.keyboard.press("Enter")
    expect(kim.locator(".message.mine .text")).to_have_text("sent without a mouse")

    # lee reaches the chat in his list with Tab, and opens it with Enter.
    expect(_chat(lee, kim_name)).to_be_visible()
    _tab_to(lee, "#chat-list button")
    expect(lee.locator("#chat-list button")).to_have_accessible_name(re.compile(r"1 unread"))
    _shot(lee, "50-keyboard-focus")
    lee.keyboard.press("Enter")
    expect(lee.locator(".message .text")).to_have_text("sent without a mouse")
    expect(lee.locator("#text")).to_be_focused()


# --- Editing and deleting, and a group's members ----------------------------------------------


def _message(page, text):
    """The one message holding `text`, found again by its id: it stays found when its text changes."""
    found = page.locator(".message", has=page.locator(":scope > .text", has_text=text))
    expect(found).to_have_count(1)
    return _by_id(page, found.get_attribute("data-id"))


def _by_id(page, message_id):
    return page.locator(f'.message[data-id="{message_id}"]')


def _button(locator, name):
    return locator.get_by_role("button", name=name, exact=True)


def _delete(page, message):
    """Point at a message, press Delete, and answer the question in the page."""
    message.hover()
    _button(message, "Delete").click()
    expect(message.locator(".actions")).to_contain_text("Delete this message?")
    _button(message, "Delete").click()


def test_editing_and_deleting_messages_are_seen_live(server, new_context):
    tag = uuid.uuid4().hex[:6]
    amy_name, ben_name = f"amy-{tag}", f"ben-{tag}"
    amy = _person(new_context, server.url, amy_name)
    ben = _person(new_context, server.url, ben_name)
    _start_chat(amy, [ben_name])
    expect(amy.locator("#chat-title")).to_have_text(ben_name)
    for text in ("helo ben", "see you at 10", "oops, wrong chat"):
        _send(amy, text)
    expect(_chat(ben, amy_name).locator(".badge")).to_have_text("3")
    expect(ben).to_have_title("(3) chat")
    # amy's other tab, a phone, has the chat open too.
    phone = _log_in(new_context, server.url, amy_name, viewport=PHONE)
    _chat(phone, ben_name).click()
    expect(phone.locator(".message .text")).to_have_count(3)

    # Her own messages carry Edit and Delete, out of sight until she points at one.
    first = _message(amy, "helo ben")
    expect(first.locator(".actions")).to_have_css("opacity", "0")
    first.hover()
    expect(first.locator(".actions")).to_have_css("opacity", "1")
    _shot(amy, "70-message-actions-on-hover")

    # Edit in place: Esc cancels, a blank text is refused next to it, Enter saves.
    _button(first, "Edit").click()
    editor = first.locator("textarea")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("helo ben")
    editor.fill("something else entirely")
    editor.press("Escape")
    expect(first.locator(".text")).to_have_text("helo ben")
    expect(editor).to_have_count(0)
    first.hover()
    _button(first, "Edit").click()
    editor.fill("   ")
    editor.press("Enter")
    expect(first.locator(".editor .field-error")).to_contain_text("cannot be empty")
    expect(editor).to_have_attribute("aria-invalid", "true")
    _shot(amy, "71-edit-in-place")
    editor.fill("hello ben")
    editor.press("Enter")
    expect(first.locator(".text")).to_have_text("hello ben")
    expect(first.locator(".edited")).to_have_text("edited")
    assert re.search(r"\d{4}", first.locator(".edited").get_attribute("title"))  # when, on hover
    expect(_by_id(phone, first.get_attribute("data-id")).locator(".text")).to_have_text("hello ben")
    expect(_by_id(phone, first.get_attribute("data-id")).locator(".edited")).to_be_visible()

    # Delete asks first, in the page; Cancel keeps the message.
    oops = _message(amy, "oops, wrong chat")
    oops.hover()
    _button(oops, "Delete").click()
    expect(oops.locator(".actions")).to_contain_text("Delete this message?")
    expect(_button(oops, "Cancel")).to_be_focused()
    _shot(amy, "72-delete-asks-first")
    _button(oops, "Cancel").click()
    expect(oops.locator(".actions")).not_to_contain_text("Delete this message?")
    _delete(amy, oops)
    expect(oops).to_have_count(0)
    expect(phone.locator(".message", has_text="oops")).to_have_count(0)
    # ben had not read it: his count drops, and his list's preview is the message before it.
    expect(_chat(ben, amy_name).locator(".badge")).to_have_text("2")
    expect(ben).to_have_title("(2) chat")
    expect(_chat(ben, amy_name).locator(".preview")).to_have_text("see you at 10")
    expect(_chat(amy, ben_name).locator(".preview")).to_have_text("You: see you at 10")

    # ben opens the chat: the edit is there ("edited"), the deleted message is not, and
    # nothing of amy's is his to change: he may only reply.
    _chat(ben, amy_name).click()
    expect(ben.locator(".message .text")).to_have_text(["hello ben", "see you at 10"])
    expect(_message(ben, "hello ben").locator(".edited")).to_be_visible()
    expect(ben.locator(".message .actions button")).to_have_text(["Reply", "Reply"])
    expect(ben).to_have_title("chat")

    # From the keyboard: Shift+Tab from the composer reaches the last message's buttons,
    # which show once focused; Enter edits; ben sees the new text live, and in his list.
    amy.mouse.move(1, 1)
    amy.focus("#text")
    amy.keyboard.press("Shift+Tab")
    last = _message(amy, "see you at 10")
    expect(_button(last, "Delete")).to_be_focused()
    expect(last.locator(".actions")).to_have_css("opacity", "1")
    amy.keyboard.press("Shift+Tab")
    expect(_button(last, "Edit")).to_be_focused()
    amy.keyboard.press("Enter")
    expect(last.locator("textarea")).to_be_focused()
    amy.keyboard.press("Control+A")
    amy.keyboard.type("see you at 11")
    amy.keyboard.press("Enter")
    expect(_button(last, "Edit")).to_be_focused()  # the keyboard keeps its place
    ben_last = _by_id(ben, last.get_attribute("data-id"))
    expect(ben_last.locator(".text")).to_have_text("see you at 11")
    expect(ben_last.locator(".edited")).to_be_visible()
    expect(_chat(ben, amy_name).locator(".preview")).to_have_text("see you at 11")
    expect(_chat(amy, ben_name).locator(".preview")).to_have_text("You: see you at 11")

    # A read message deleted goes from ben's open chat live, and from amy's other tab.
    _delete(amy, first)
    expect(ben.locator(".message .text")).to_have_text(["see you at 11"])
    expect(phone.locator(".message .text")).to_have_text(["see you at 11"])
    _shot(ben, "73-ben-after-edit-and-delete")

    # On the phone: the buttons in place over the bubble, the question too.
    phone_last = _by_id(phone, last.get_attribute("data-id"))
    phone_last.hover()
    _button(phone_last, "Delete").click()
    expect(phone_last.locator(".actions")).to_contain_text("Delete this message?")
    _in_place(phone, f'.message[data-id="{last.get_attribute("data-id")}"] .actions')
    _no_page_scroll(phone)
    _shot(phone, "74-delete-asks-first-phone")
    phone.keyboard.press("Escape")
    expect(phone_last.locator(".actions")).not_to_contain_text("Delete this message?")


def test_a_touch_screen_shows_a_message_s_actions_on_a_tap(server, new_context):
    tag = uuid.uuid4().hex[:6]
    cy_name, di_name = f"cy-{tag}", f"di-{tag}"
    httpx.post(
        f"{server.url}/register", json={"name": di_name, "email": f"{di_name}@example.com", "password": PASSWORD}
    ).raise_for_status()
    cy = _person(new_context, server.url, cy_name, viewport=PHONE, has_touch=True, is_mobile=True)
    assert cy.evaluate("matchMedia('(hover: none)').matches")
    _start_chat(cy, [di_name])
    _send(cy, "tap me")
    message = _message(cy, "tap me")
    expect(message.locator(".actions")).to_have_css("opacity", "0")
    message.locator(".text").tap()
    expect(message.locator(".actions")).to_have_css("opacity", "1")
    _button(message, "Edit").tap()
    expect(message.locator("textarea")).to_have_value("tap me")
    _button(message, "Cancel").tap()
    expect(message.locator(".text")).to_have_text("tap me")


def test_a_group_s_members_change_live(server, new_context):
    tag = uuid.uuid4().hex[:6]
    olga_name, bob_name, carol_name, dan_name = f"olga-{tag}", f"bob-{tag}", f"carol-{tag}", f"dan-{tag}"
    olga = _person(new_context, server.url, olga_name)
    bob = _person(new_context, server.url, bob_name)
    carol = _person(new_context, server.url, carol_name, viewport=PHONE)
    dan = _person(new_context, server.url, dan_name)
    group, renamed = f"crew-{tag}", f"crew-{tag} renamed"
    _start_chat(olga, [bob_name], group_name=group)
    expect(olga.locator("#chat-title")).to_have_text(group)
    _send(olga, "before carol joined")
    _chat(bob, group).click()
    _send(bob, "a word from bob")
    _send(bob, "bob's second word")

    # The owner may delete anyone's message in her group (not edit it); bob only his own.
    expect(olga.locator(".message .text").last).to_have_text("bob's second word")
    bobs = _message(olga, "a word from bob")
    bobs.hover()
    expect(_button(bobs, "Edit")).to_have_count(0)
    _delete(olga, bobs)
    expect(bob.locator(".message", has_text="a word from bob")).to_have_count(0)
    expect(olga.locator(".message", has_text="a word from bob")).to_have_count(0)
    expect(_message(bob, "before carol joined").locator(".actions button")).to_have_text(["Reply"])
    expect(_message(bob, "bob's second word").locator(".actions button")).to_have_text(["Reply", "Edit", "Delete"])

    # The header opens the members: the owner first and marked, who is online dotted; the
    # owner may rename and remove, bob may not.
    expect(olga.locator("#members-button")).to_have_text("2 members")
    olga.click("#members-button")
    expect(olga.locator("#members")).to_be_visible()
    expect(olga.locator("#member-list li")).to_have_count(2)
    expect(olga.locator("#member-list li").first).to_contain_text(f"{olga_name} (you)")
    expect(olga.locator("#member-list li").first.locator(".tag")).to_have_text("owner")
    expect(olga.locator("#member-list li", has_text=bob_name)).to_have_class(ONLINE)
    expect(olga.locator("#rename-form")).to_be_visible()
    expect(olga.get_by_role("button", name=f"Remove {bob_name}")).to_be_visible()
    bob.click("#members-button")
    expect(bob.locator("#member-list li")).to_have_count(2)
    expect(bob.locator("#rename-form")).to_be_hidden()
    expect(bob.locator("#member-list button")).to_have_count(0)
    expect(bob.locator("#leave")).to_be_visible()

    # Add people, from the same picker as "New chat": everyone not in the group yet.
    olga.click("#add-members summary")
    picker = olga.locator("#add-people")
    expect(picker.get_by_label(carol_name, exact=True)).to_be_visible()
    expect(picker.get_by_label(dan_name, exact=True)).to_be_visible()
    expect(picker.get_by_label(bob_name, exact=True)).to_have_count(0)
    olga.click("#add")
    expect(olga.locator("#add-error")).to_contain_text("Tick the people")
    picker.get_by_label(carol_name, exact=True).check()
    picker.get_by_label(dan_name, exact=True).check()
    _shot(olga, "80-members-add-people")
    olga.emulate_media(color_scheme="dark")
    _shot(olga, "80-members-add-people-dark")
    olga.emulate_media(color_scheme="light")
    olga.click("#add")
    expect(olga.locator("#member-list li")).to_have_count(4)
    expect(olga.locator("#add-members")).not_to_have_attribute("open", "")
    expect(bob.locator("#member-list li")).to_have_count(4)  # live, in his open panel
    expect(bob.locator("#members-button")).to_have_text("4 members")

    # carol sees the group arrive, nothing of it unread, and reads what was said before her.
    expect(_chat(carol, group)).to_be_visible()
    expect(_chat(carol, group).locator(".badge")).to_have_count(0)
    expect(carol).to_have_title("chat")
    _chat(carol, group).click()
    expect(carol.locator(".message .text")).to_have_text(["before carol joined", "bob's second word"])
    carol.click("#members-button")
    expect(carol.locator("#member-list li")).to_have_count(4)
    _in_place(carol, "#members", "#leave")
    _no_page_scroll(carol)
    _shot(carol, "81-members-phone")
    carol.keyboard.press("Escape")  # the keyboard is in the panel once it opens; Esc closes it
    expect(carol.locator("#members")).to_be_hidden()
    expect(carol.locator("#members-button")).to_be_focused()

    # The owner renames it: a blank name is refused beside the field; the others see the new name.
    olga.fill("#group-rename", "  ")
    olga.press("#group-rename", "Enter")
    expect(olga.locator("#group-rename-error")).to_contain_text("Give the group a name")
    olga.fill("#group-rename", renamed)
    olga.click("#rename")
    for page in (olga, bob, carol):
        expect(page.locator("#chat-title")).to_have_text(renamed)
        expect(_chat(page, renamed)).to_have_count(1)  # in the list (hidden on a phone in a chat)
    expect(olga.locator("#group-rename-error")).to_be_hidden()

    # The owner removes carol, after a question: the group leaves carol's list (and its pane),
    # with a word why; the others see her go.
    _button(olga.locator("#member-list"), f"Remove {carol_name}").click()
    expect(olga.locator("#member-list .confirm")).to_contain_text(f"Remove {carol_name} from the group?")
    expect(_button(olga.locator("#member-list .confirm"), "Cancel")).to_be_focused()
    _shot(olga, "82-remove-asks-first")
    _button(olga.locator("#member-list .confirm"), "Remove").click()
    expect(_chat(carol, renamed)).to_have_count(0)
    expect(carol.locator("#notice-text")).to_have_text(f"You are no longer in “{renamed}”.")
    expect(carol.locator("#sidebar")).to_be_visible()  # back to the list, on a phone
    _shot(carol, "83-removed-phone")
    expect(olga.locator("#member-list li")).to_have_count(3)
    expect(bob.locator("#member-list li")).to_have_count(3)
    expect(bob.locator("#member-list li", has_text=carol_name)).to_have_count(0)

    # bob leaves, after a question: the group leaves his list; olga and dan see him go.
    bob.click("#leave")
    expect(bob.locator("#leave-question")).to_contain_text(f"Leave “{renamed}”?")
    expect(bob.locator("#leave-no")).to_be_focused()
    _shot(bob, "84-leave-asks-first")
    bob.click("#leave-yes")
    expect(_chat(bob, renamed)).to_have_count(0)
    expect(bob.locator("#notice")).to_contain_text(f"You left “{renamed}”.")
    expect(bob.locator("#members")).to_be_hidden()
    expect(bob.locator("#members-button")).to_be_hidden()
    expect(bob.locator("#messages .message")).to_have_count(0)
    _shot(bob, "85-bob-left")
    expect(olga.locator("#member-list li")).to_have_count(2)
    expect(olga.locator("#members-button")).to_have_text("2 members")

    # The owner leaves: dan, the one left, owns the group now, and may rename it.
    _chat(dan, renamed).click()
    dan.click("#members-button")
    expect(dan.locator("#rename-form")).to_be_hidden()
    olga.click("#leave")
    expect(olga.locator("#leave-question")).to_contain_text("Whoever has been in it longest will own it")
    olga.click("#leave-yes")
    expect(_chat(olga, renamed)).to_have_count(0)
    expect(dan.locator("#member-list li")).to_have_count(1)
    expect(dan.locator("#member-list li .tag")).to_have_text("owner")
    expect(dan.locator("#rename-form")).to_be_visible()
    expect(dan.locator("#group-rename")).to_have_value(renamed)


# --- Who is typing --------------------------------------------------------------------------------


# Records in the page, with the time, what the chat list's previews say whenever it is redrawn.
WATCH_PREVIEWS = """() => {
    window.previews = [];
    const note = () => window.previews.push([performance.now(),
        [...document.querySelectorAll("#chat-list .preview")].map(preview => preview.textContent).join(" | ")]);
    new MutationObserver(note).observe(document.getElementById("chat-list"), {childList: true, subtree: true});
}"""


def _commands_sent(action):
    """A list of the `action` commands a profile's pages send, and the setup that fills it."""
    sent = []

    def record(ws):
        ws.on("framesent", lambda payload: f'"{action}"' in payload and sent.append(json.loads(payload)))

    return sent, lambda context: context.on("page", lambda page: page.on("websocket", record))


def test_who_is_typing_shows_under_the_chat_and_in_the_list(server, new_context):
    tag = uuid.uuid4().hex[:6]
    alice_name, bob_name, carol_name, group = f"alice-{tag}", f"bob-{tag}", f"carol-{tag}", f"crew-{tag}"
    bob = _person(new_context, server.url, bob_name)
    carol = _person(new_context, server.url, carol_name, viewport=PHONE)
    sent, watch = _commands_sent("typing")
    alice = _person(new_context, server.url, alice_name, setup=watch)
    _start_chat(alice, [bob_name, carol_name], group_name=group)
    _start_chat(alice, [bob_name])
    expect(alice.locator("#chat-title")).to_have_text(bob_name)
    _chat(bob, alice_name).click()
    _send(bob, "hi alice")  # alice has typed nothing yet: her first typing command goes at once
    expect(bob.locator("#typing")).to_have_attribute("aria-live", "polite")

    # alice types in their chat: one typing command for a burst of keys, and bob sees it under
    # the chat and in his list, in place of the chat's preview.
    alice.locator("#text").press_sequentially("are you free at 10?", delay=20)
    expect(bob.locator("#typing")).to_have_text(f"{alice_name} is typing…")
    expect(_chat(bob, alice_name).locator(".preview")).to_have_text(f"{alice_name} is typing…")
    expect(_chat(bob, alice_name).locator(".preview")).to_have_class(re.compile(r"\btyping\b"))
    assert _pane_at_bottom(bob)  # the line takes room from the messages, which stay in view
    _in_place(bob, "#typing", "#composer")
    _shot(bob, "90-typing-desktop")
    bob.emulate_media(color_scheme="dark")
    _shot(bob, "90-typing-desktop-dark")
    bob.emulate_media(color_scheme="light")
    assert [command["chat_id"] for command in sent] == [sent[0]["chat_id"]]  # at most every 3 s

    # Her message arrives: the line goes at once (well before its 6 s), the preview is the message.
    alice.press("#text", "Enter")
    expect(bob.locator(".message .text").last).to_have_text("are you free at 10?")
    expect(bob.locator("#typing")).to_have_text("", timeout=1_000)
    expect(_chat(bob, alice_name).locator(".preview")).to_have_text("are you free at 10?")

    # In the group (open on carol's phone, not on bob's page): alice types, then carol. carol
    # sees alice under the chat; bob sees both in his list, and nothing under his open chat.
    _chat(carol, group).click()
    bob.evaluate(WATCH_PREVIEWS)
    _chat(alice, group).click()
    alice.locator("#text").press_sequentially("how about", delay=20)
    expect(carol.locator("#typing")).to_have_text(f"{alice_name} is typing…")
    carol.locator("#text").press_sequentially("me too", delay=20)
    preview = _chat(bob, group).locator(".preview")
    expect(preview).to_have_text(f"{alice_name} and {carol_name} are typing…")
    expect(alice.locator("#typing")).to_have_text(f"{carol_name} is typing…")
    expect(bob.locator("#typing")).to_have_text("")
    _shot(bob, "92-two-typing-in-the-list")

    # Nobody types on: 6 s after carol's push (the last), the list's preview is back; timed by
    # the page itself, from the moment carol showed in it.
    expect(preview).to_have_text("No messages yet", timeout=9_000)
    shown = bob.evaluate("window.previews")
    came = next(at for at, text in shown if carol_name in text)
    went = next(at for at, text in shown if at > came and " typing…" not in text)
    assert 5_500 < went - came < 7_000, went - came
    expect(carol.locator("#typing")).to_have_text("")

    # alice again, on carol's phone: in the list, then under the chat, in light and dark.
    carol.click("#back")
    alice.locator("#text").press_sequentially(" tomorrow?", delay=20)
    expect(_chat(carol, group).locator(".preview")).to_have_text(f"{alice_name} is typing…")
    _shot(carol, "93-typing-in-the-list-phone")
    _chat(carol, group).click()
    expect(carol.locator("#typing")).to_have_text(f"{alice_name} is typing…")
    _in_place(carol, "#typing", "#composer")
    _no_page_scroll(carol)
    _shot(carol, "91-typing-phone")
    carol.emulate_media(color_scheme="dark")
    _shot(carol, "91-typing-phone-dark")
    carol.emulate_media(color_scheme="light")


# --- Search and replies ------------------------------------------------------------------------


def _flashed(page, message, shot=None):
    """The message is on screen and lit up for a moment, as one the page took you to is."""
    expect(message).to_be_in_viewport()
    expect(message).to_have_class(re.compile(r"\bflash\b"))
    if shot:
        _shot(page, shot)
    expect(message).not_to_have_class(re.compile(r"\bflash\b"), timeout=5_000)


def _results(page):
    return page.locator("#result-list li")


def test_search_finds_words_by_their_start_and_opens_the_chat_at_the_message(server, new_context, database_url):
    """Every word must occur, each as the start of a word, in any letters (Cyrillic too), only
    in your chats; the words that matched are marked; a result opens its chat at the message,
    paging back through older history to it."""
    tag = uuid.uuid4().hex[:6]
    ana_name, ivan_name, eve_name, group = f"ana-{tag}", f"ivan-{tag}", f"eve-{tag}", f"ops-{tag}"
    ana = _person(new_context, server.url, ana_name)
    ivan = _person(new_context, server.url, ivan_name, viewport=PHONE)
    body = {"name": eve_name, "email": f"{eve_name}@example.com", "password": PASSWORD}
    eve = httpx.post(f"{server.url}/register", json=body).json()["user_uuid"]
    # Their private chat; then a group: ivan's Russian message first, 150 after it, the newest
    # about staging; then ivan's chat with eve, which ana is not in: never hers to find.
    _seed_chat(
        database_url,
        [_uuid(ana), _uuid(ivan)],
        ["Deploying to staging.example.com now", INJECTION],
        kind="private",
        minutes_ago=30,
    )
    fillers = [f"status {i:03}" for i in range(1, 151)]
    _seed_chat(
        database_url,
        [_uuid(ivan), _uuid(ana)],
        ["Миграция базы завтра", *fillers, "deployed to staging"],
        name=group,
    )
    _seed_chat(database_url, [_uuid(ivan), eve], ["миграция чужая"], kind="private")
    for page in (ana, ivan):
        page.reload()
        expect(_chat(page, group)).to_be_visible()
    history = _requests(ana, r"/history/\d+")

    # Both words, each the start of a word ("staging.example.com" is three words), newest first.
    ana.fill("#search-input", "deplo stag")
    ana.press("#search-input", "Enter")
    expect(_results(ana)).to_have_count(2)
    expect(ana.locator("#chat-list")).to_be_hidden()
    expect(_results(ana).locator(".title")).to_have_text([group, ivan_name])
    expect(_results(ana).locator(".from")).to_have_text(["You", "You"])
    expect(_results(ana).first.locator("mark")).to_have_text(["deployed", "staging"])
    expect(_results(ana).last.locator("mark")).to_have_text(["Deploying", "staging"])
    expect(_results(ana).last.locator(".snippet")).to_have_text("Deploying to staging.example.com now")
    expect(ana.locator("#search-status")).to_have_text("2 messages found")
    _shot(ana, "100-search-results")

    # Markup in a message is text in the results too, the match marked all the same.
    ana.fill("#search-input", "onerr")
    expect(_results(ana).locator("mark")).to_have_text(["onerror"])
    expect(_results(ana).locator(".snippet")).to_have_text(INJECTION)
    expect(ana.locator("#result-list img")).to_have_count(0)

    # Nothing found says so.
    ana.fill("#search-input", "xyzzy")
    expect(ana.locator("#search-status")).to_have_text("No messages found")
    expect(_results(ana)).to_have_count(0)

    # Russian, found by the start of a word whatever its case; eve's chat is not searched.
    ana.fill("#search-input", "мигра")
    ana.press("#search-input", "Enter")
    expect(_results(ana)).to_have_count(1)
    result = _results(ana).first
    expect(result.locator(".title")).to_have_text(group)
    expect(result.locator(".from")).to_have_text(ivan_name)
    expect(result.locator(".snippet")).to_have_text("Миграция базы завтра")
    expect(result.locator("mark")).to_have_text(["Миграция"])
    assert re.search(r"\d{4}", result.locator("time").get_attribute("title"))  # the full date on hover
    _shot(ana, "101-search-russian")

    # A click opens the chat at the message: 151 messages newer than it, so the page pages back
    # (100 at a time) to it, and lights it up. Everything from it to the newest is there.
    history.clear()
    result.locator("button").click()
    expect(ana.locator("#chat-title")).to_have_text(group)
    found = _message(ana, "Миграция базы завтра")
    _flashed(ana, found, shot="102-search-opened-at-the-message")
    expect(found).to_be_focused()
    expect(result.locator("button")).to_have_attribute("aria-current", "true")
    assert any("before_id=" in url and "page_size=100" in url for url in history), history
    expect(ana.locator(".message .text")).to_have_count(152)
    expect(ana.locator(".message .text").nth(1)).to_have_text("status 001")
    expect(ana.locator("#new-messages")).to_have_text("Latest messages ↓")
    expect(ana.locator("#pane-note")).to_be_hidden()
    _no_page_scroll(ana)
    ana.click("#new-messages")
    expect(ana.locator(".message .text").last).to_have_text("deployed to staging")
    expect(ana.locator(".message .text").last).to_be_in_viewport()

    # A result of the chat already open, already on screen: no paging, just there.
    ana.fill("#search-input", "status 075")
    expect(_results(ana).locator(".snippet")).to_have_text(["status 075"])
    history.clear()
    _results(ana).first.locator("button").click()
    _flashed(ana, _message(ana, "status 075"))
    assert history == []

    # ✕ brings the chat list back; so does Esc.
    ana.click("#search-clear")
    expect(ana.locator("#chat-list")).to_be_visible()
    expect(ana.locator("#search-results")).to_be_hidden()
    expect(ana.locator("#search-input")).to_have_value("")
    expect(ana.locator("#search-input")).to_be_focused()
    ana.fill("#search-input", "staging")
    expect(_results(ana)).to_have_count(2)
    ana.press("#search-input", "Escape")
    expect(ana.locator("#chat-list")).to_be_visible()

    # On a phone: the results in place of the list, a result opens the chat, ‹ goes back to them.
    ivan.fill("#search-input", "МИГРАЦИЯ")
    expect(_results(ivan).locator(".title")).to_have_text([eve_name, group])  # his chat with eve too
    expect(_results(ivan).locator("mark")).to_have_text(["миграция", "Миграция"])
    _in_place(ivan, "#search-input", "#result-list")
    _no_page_scroll(ivan)
    _shot(ivan, "103-search-phone")
    _results(ivan).filter(has_text=group).locator("button").click()
    _flashed(ivan, _message(ivan, "Миграция базы завтра"), shot="104-search-opened-phone")
    expect(ivan.locator("#sidebar")).to_be_hidden()
    ivan.click("#back")
    expect(_results(ivan)).to_have_count(2)


def test_replies_quote_the_message_they_answer(server, new_context, database_url):
    """alice replies to an old message of bob's; both see the quote above the reply, a click on
    it goes to the original (paging back to it), and once bob deletes the original the quote
    says so."""
    tag = uuid.uuid4().hex[:6]
    alice_name, bob_name = f"alice-{tag}", f"bob-{tag}"
    sent, watch = _commands_sent("send_message")
    alice = _person(new_context, server.url, alice_name, setup=watch)
    bob = _person(new_context, server.url, bob_name)
    question = "Can you review the migration plan before Friday? It is in the shared folder."
    _seed_chat(
        database_url,
        [_uuid(bob), _uuid(alice)],
        [question, *(f"note {i:02}" for i in range(1, 61))],
        kind="private",
    )
    for page in (alice, bob):
        page.reload()
    _chat(bob, alice_name).click()
    expect(bob.locator(".message .text").last).to_have_text("note 60")

    # alice finds bob's question (older than the page she would open), and replies to it.
    alice.fill("#search-input", "review migration")
    _results(alice).first.locator("button").click()
    original = _message(alice, "Can you review the migration plan")
    _flashed(alice, original)
    original.hover()
    _button(original, "Reply").click()
    expect(alice.locator("#reply-bar")).to_be_visible()
    expect(alice.locator("#reply-bar .quote-who")).to_have_text(f"Replying to {bob_name}")
    expect(alice.locator("#reply-excerpt")).to_have_text(question)
    expect(alice.locator("#text")).to_be_focused()
    # ✕ drops the reply, and so does Esc in the composer.
    alice.click("#reply-cancel")
    expect(alice.locator("#reply-bar")).to_be_hidden()
    expect(alice.locator("#text")).to_be_focused()
    original.hover()
    _button(original, "Reply").click()
    alice.press("#text", "Escape")
    expect(alice.locator("#reply-bar")).to_be_hidden()
    original.hover()
    _button(original, "Reply").click()
    alice.fill("#text", "Yes, it looks good to me")
    _in_place(alice, "#reply-bar", "#composer")
    _no_page_scroll(alice)
    _shot(alice, "110-replying")
    alice.emulate_media(color_scheme="dark")
    _shot(alice, "110-replying-dark")
    alice.emulate_media(color_scheme="light")
    alice.press("#text", "Enter")

    # Sent with reply_to; the composer's quote goes, the message shows it above its text.
    reply = _message(alice, "Yes, it looks good to me")
    expect(alice.locator("#reply-bar")).to_be_hidden()
    assert sent[-1]["reply_to"] == int(original.get_attribute("data-id")), sent[-1]
    expect(reply.locator(".quote .quote-who")).to_have_text(bob_name)
    expect(reply.locator(".quote .quote-text")).to_have_text(question)
    expect(reply).to_be_in_viewport()
    reply.locator(".quote").click()
    _flashed(alice, original)

    # bob's page has the newest 60 messages, not his question: the reply says so, above its text.
    bobs_reply = _message(bob, "Yes, it looks good to me")
    bobs_quote = bobs_reply.locator(".quote")
    expect(bobs_quote).to_have_text("message not loaded")
    assert bobs_quote.bounding_box()["y"] < bobs_reply.locator(".text").bounding_box()["y"]
    _shot(bob, "111-reply-quotes-a-message-not-loaded")
    # A click pages back to the original; the quote now shows it (bob's own: "You").
    bobs_quote.click()
    bobs_original = _message(bob, "Can you review the migration plan")
    _flashed(bob, bobs_original, shot="112-reply-original-lit")
    expect(bobs_quote.locator(".quote-who")).to_have_text("You")
    expect(bobs_quote.locator(".quote-text")).to_have_text(question)
    bob.click("#new-messages")
    expect(bobs_reply).to_be_in_viewport()
    _shot(bob, "112-reply-quotes-the-original-shown")

    # bob deletes his question: both quotes say "deleted message", and lead nowhere.
    _delete(bob, bobs_original)
    expect(bobs_original).to_have_count(0)
    expect(bobs_quote).to_have_text("deleted message")
    expect(bobs_quote).to_be_disabled()
    expect(reply.locator(".quote")).to_have_text("deleted message")
    expect(original).to_have_count(0)
    bobs_reply.scroll_into_view_if_needed()
    _shot(bob, "113-reply-to-a-deleted-message")

    # After a reload alice's page cannot know yet; a click pages back, and then it does.
    alice.reload()
    _chat(alice, bob_name).click()
    quote = _message(alice, "Yes, it looks good to me").locator(".quote")
    expect(quote).to_have_text("message not loaded")
    quote.click()
    expect(alice.locator("#pane-note")).to_have_text("That message is no longer there: it was deleted.")
    expect(quote).to_have_text("deleted message")
    expect(alice.locator(".message .text")).to_have_count(61)


# --- Written last: /docs must render with no internet (Swagger UI served by chat.py itself) -------


def test_docs_render_without_internet(server, new_context):
    context = new_context()
    # Every request to anywhere but this server fails, as on a machine with no internet.
    context.route(lambda url: not url.startswith(server.url), lambda route: route.abort())
    page = _page(context)
    page.goto(f"{server.url}/docs")
    expect(page.get_by_text("/register", exact=True).first).to_be_visible()
    _shot(page, "60-docs-offline")
