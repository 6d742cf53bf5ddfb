"""End to end in Debian's headless Chromium: three people use the page at / as a team would.

Screenshots of each step go to test-output/browser/.
"""

import asyncio
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import PASSWORD, ROOT

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


def _person(browser, server, name, **context_options):
    """A fresh browser profile that registers `name` through the page."""
    page = browser.new_context(**context_options).new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    page.goto(server.url)
    page.fill("#name", name)
    page.fill("#email", f"{name}@example.com")
    page.fill("#password", PASSWORD)
    page.click("#register")
    expect(page.locator("#app")).to_be_visible()
    return page


def _start_chat(page, names, group_name=""):
    page.click("#new-chat summary")
    for name in names:
        page.get_by_label(name, exact=True).check()
    page.fill("#group-name", group_name)
    page.click("#start-chat")


def _chat(page, title):
    return page.locator("#chat-list li", has_text=title)


def _shot(page, name):
    page.screenshot(path=SHOTS / f"{name}.png")


def test_a_team_chats_in_the_browser(server, browser):
    tag = uuid.uuid4().hex[:6]
    alice_name, bob_name, carol_name = f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"
    alice = _person(browser, server, alice_name)
    bob = _person(browser, server, bob_name)
    carol = _person(browser, server, carol_name, viewport={"width": 390, "height": 760})  # a phone
    alice.reload()  # picks up the people who registered after her
    bob.reload()
    _shot(alice, "01-alice-logged-in")

    # alice starts a private chat with bob and writes; bob sees it arrive.
    _start_chat(alice, [bob_name])
    expect(alice.locator("#chat-title")).to_have_text(bob_name)
    alice.fill("#text", "hello bob")
    alice.press("#text", "Enter")
    mine = alice.locator(".message.mine", has_text="hello bob")
    expect(mine).to_contain_text("delivered")
    expect(_chat(bob, alice_name).locator(".badge")).to_have_text("1")
    _shot(alice, "02-alice-sent")
    _shot(bob, "03-bob-sees-unread")

    # bob opens it: it is marked read, and alice's mark flips.
    _chat(bob, alice_name).click()
    expect(bob.locator(".message", has_text="hello bob")).to_be_visible()
    expect(_chat(bob, alice_name).locator(".badge")).to_have_count(0)
    expect(mine).to_have_attribute("data-status", "read")
    expect(mine).to_contain_text("read")
    _shot(bob, "04-bob-read")
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

    # A group of three: everyone gets the message.
    _start_chat(alice, [bob_name, carol_name], group_name=f"trio-{tag}")
    expect(alice.locator("#chat-title")).to_have_text(f"trio-{tag}")
    alice.fill("#text", "hello trio")
    alice.press("#text", "Enter")
    alice.fill("#text", INJECTION)
    alice.press("#text", "Enter")
    for page in (bob, carol):
        _chat(page, f"trio-{tag}").click()
        expect(page.locator(".message .text", has_text="hello trio")).to_be_visible()
        # Markup in a message is shown as text, never run.
        expect(page.locator(".message .text").last).to_have_text(INJECTION)
        expect(page.locator("#messages img")).to_have_count(0)
    _shot(bob, "06-bob-group-with-injection")
    _shot(carol, "07-carol-phone-width")

    # A dropped socket is announced and reconnects by itself.
    bob.evaluate("state.ws.close()")
    expect(bob.locator("#status")).to_contain_text("reconnecting")
    _shot(bob, "08-bob-reconnecting")
    expect(bob.locator("#status")).to_be_hidden(timeout=10_000)

    # Older history loads on demand: 60 more messages, then the first one is a page away.
    alice.evaluate(
        """chatId => { for (let i = 0; i < 60; i++)
             state.ws.send(JSON.stringify({action: "send_message", chat_id: chatId, text: `filler ${i}`})); }""",
        int(_chat(alice, bob_name).get_attribute("data-id")),
    )
    _chat(bob, alice_name).click()
    expect(bob.locator(".message .text").last).to_have_text("filler 59")
    expect(bob.locator(".message")).to_have_count(50)
    bob.click("#older")
    expect(bob.locator(".message")).to_have_count(62)  # hello bob, line one/two, 60 fillers
    expect(bob.locator(".message .text").first).to_have_text("hello bob")
    _shot(bob, "09-bob-older-history")

    # A reload keeps the session and the chats.
    bob.reload()
    expect(bob.locator("#app")).to_be_visible()
    expect(bob.locator("#chat-list li")).to_have_count(2)
    _shot(bob, "10-bob-after-reload")

    # bob leaves: his dot goes out on alice's page.
    bob.close()
    expect(_chat(alice, bob_name)).not_to_have_class(ONLINE)
    expect(alice.locator("#people li", has_text=bob_name)).not_to_have_class(ONLINE)


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


def test_a_long_unread_list_is_fetched_past_the_first_frame(server, browser, database_url):
    """1,200 unread: the first frame carries 500 of them, the page fetches the rest from GET /unread."""
    tag = uuid.uuid4().hex[:6]
    reader, writer = _person(browser, server, f"reader-{tag}"), _person(browser, server, f"writer-{tag}")
    reader_id, writer_id = (page.evaluate("sessionStorage.getItem('me')") for page in (reader, writer))
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
    _shot(reader, "20-reader-sees-1200-unread")
