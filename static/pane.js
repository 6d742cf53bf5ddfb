// The open chat: its messages a page of history at a time, a line for each day, the view
// following new messages (or a "New messages" pill when you have scrolled up), editing,
// deleting and replying to them in place, opening at an older message (from a search result
// or a reply's quote), the composer (and under it, who is typing: typing.js).
import { renderChats, showNotice } from "./chats.js";
import {
  $,
  api,
  button,
  chatTitle,
  clockTime,
  dayLabel,
  el,
  excerpt,
  fullTime,
  nameOf,
  setProblem,
  state,
} from "./common.js";
import { send } from "./connection.js";
import { renderMembers, resetMembers } from "./members.js";
import { renderTyping } from "./typing.js";

const PAGE_SIZE = 50;
const JUMP_PAGE_SIZE = 100; // paging back to an older message: the largest page /history gives
const NEAR_PX = 40; // this close to the bottom counts as at the bottom, to the top as the top
const FLASH_MS = 2_500; // how long a message you were taken to stays lit
const messages = new Map(); // message id -> message, for the open chat
let opened = 0; // bumps whenever the pane starts afresh: a page asked for before is dropped
let loading = null; // {opened, promise}: a page of history on its way
let shown = null; // the chat whose history is on screen (null while its first page loads)
let complete = false; // the open chat's history is on screen back to its first message
const gone = new Set(); // ids of messages deleted while the chat was open (a reply's quote says so)
let jumps = 0; // bumps with each jump to a message: one still paging back gives up
let replying = null; // the id of the message the composer replies to
const pending = new Map(); // client_msg_id -> send_message command not yet answered
let editing = null; // {id, form, area}: the message being edited in place
let confirming = null; // the id of the message whose Delete asks "Delete this message?"
const refusals = new Map(); // message id -> why the server would not delete it

// Open a chat at its newest message, or, given `target`, at that message (paging back to it).
export async function openChat(id, target = null) {
  const chat = state.chats.get(id);
  if (!chat) return;
  state.open = id;
  shown = null;
  forgetMessages();
  endReply(false);
  $("new-messages").hidden = true;
  $("app").classList.add("in-chat");
  $("chat-title").textContent = chatTitle(chat);
  $("composer").hidden = false;
  showNotice("");
  resetMembers();
  renderChats();
  renderTyping();
  const ticket = opened;
  await loadOlder();
  if (state.open !== id || opened !== ticket) return; // another chat was opened meanwhile
  if (target !== null) return jumpTo(target);
  scrollToEnd();
  markSeen();
  $("text").focus();
}

// A search result: its chat, scrolled to it (the chat is opened unless it is open already).
export function showMessageAt(chatId, messageId) {
  if (state.open !== chatId || shown !== chatId) return openChat(chatId, messageId);
  $("app").classList.add("in-chat"); // on a phone, back from the list to the chat
  return jumpTo(messageId);
}

export function closeChat() {
  const id = state.open;
  state.open = null;
  shown = null;
  $("app").classList.remove("in-chat");
  $("composer").hidden = true;
  forgetMessages();
  endReply(false);
  resetMembers();
  renderChats();
  renderTyping();
  $("chat-list").querySelector(`li[data-id="${id}"] button`)?.focus();
}

function forgetMessages() {
  opened += 1;
  jumps += 1;
  messages.clear();
  gone.clear();
  complete = false;
  editing = confirming = null;
  refusals.clear();
  $("messages").replaceChildren();
  $("older").hidden = true;
  paneNote("");
}

// The open chat's name, members or owner changed: its title, the names on its messages and
// who may delete what (a new owner may delete anyone's), and its members panel.
export function chatChanged(id) {
  if (id !== state.open || !state.chats.has(id)) return;
  $("chat-title").textContent = chatTitle(state.chats.get(id));
  for (const item of $("messages").querySelectorAll("li.message")) {
    fillMessage(item, messages.get(Number(item.dataset.id)));
  }
  renderMembers();
}

// After a reconnect: the newest page again, merged with what is on screen. If more came
// meanwhile than a page holds, the gap would hide messages: start the chat afresh instead.
export async function refreshOpenChat() {
  const id = state.open;
  const before = [...messages.keys()]; // what arrives while the page is on its way is not in it
  const { messages: page } = await api(`/history/${id}?page=1&page_size=${PAGE_SIZE}`);
  if (state.open !== id) return;
  const newest = Math.max(0, ...messages.keys());
  if (page.length === PAGE_SIZE && page[page.length - 1].id > newest) return openChat(id);
  const follow = atBottom();
  // What was on screen within the page's span of ids but is not in it was deleted while the
  // socket was away.
  const oldest = page.length < PAGE_SIZE ? 0 : page[page.length - 1].id;
  const kept = new Set(page.map((message) => message.id));
  before.filter((old) => old >= oldest && !kept.has(old)).forEach((old) => messageDeleted({ id: old }));
  page.forEach(place);
  renderDays();
  renderQuotes();
  renderEmptyPane();
  if (follow) scrollToEnd();
  markSeen();
}

// The page of history just older than what is on screen (the newest page at first).
async function loadOlder(size = PAGE_SIZE) {
  const chatId = state.open;
  const ticket = opened;
  if (loading?.opened === ticket) return loading.promise;
  const query = messages.size ? `before_id=${oldestId()}` : "page=1";
  const promise = api(`/history/${chatId}?${query}&page_size=${size}`).then(({ messages: page }) => {
    if (opened !== ticket) return; // the pane started afresh meanwhile (another chat, say)
    page.forEach(place);
    complete = page.length < size;
    renderDays();
    renderQuotes();
    $("older").hidden = complete;
    shown = chatId;
    renderEmptyPane();
  });
  loading = { opened: ticket, promise };
  try {
    await promise;
  } finally {
    if (loading?.promise === promise) loading = null;
  }
}

// Older history goes in above what you are reading, which stays where it was on screen.
async function loadOlderInPlace() {
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  await loadOlder();
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
}

$("older").addEventListener("click", loadOlderInPlace);
$("scroller").addEventListener("scroll", () => {
  if (atBottom()) {
    $("new-messages").hidden = true;
    markSeen();
  }
  if ($("scroller").scrollTop < NEAR_PX && !$("older").hidden) loadOlderInPlace();
});
$("new-messages").addEventListener("click", () => {
  scrollToEnd();
  $("text").focus();
});

// The id of the oldest message on screen (they are in id order), or Infinity for none.
function oldestId() {
  const first = $("messages").querySelector("li.message");
  return first ? Number(first.dataset.id) : Infinity;
}

// Scroll to a message of the open chat and light it up for a moment. One older than what is on
// screen is paged to, 100 at a time, so that the pane stays one unbroken stretch from it down
// to the newest (scrolling down from it reads on without a gap).
async function jumpTo(id) {
  const ticket = ++jumps;
  const stale = () => ticket !== jumps;
  if (!messages.has(id) && !complete && id < oldestId()) paneNote("Finding the message…");
  try {
    while (!messages.has(id) && !complete && id < oldestId()) {
      await loadOlder(JUMP_PAGE_SIZE);
      if (stale()) return;
    }
  } catch (error) {
    if (!stale()) paneNote(`Could not load older messages: ${error.message}`, 5_000);
    return;
  }
  const item = itemOf(id);
  if (!item) return paneNote("That message is no longer there: it was deleted.", 5_000);
  paneNote("");
  item.scrollIntoView({ block: "center" });
  flash(item);
  item.tabIndex = -1; // the keyboard (and a screen reader) goes to it too
  item.focus({ preventScroll: true });
  if (atBottom()) markSeen();
  else pill("Latest messages ↓");
}

const flashes = new WeakMap(); // message element -> the timer that puts out its light

function flash(item) {
  clearTimeout(flashes.get(item));
  item.classList.remove("flash");
  void item.offsetWidth; // a second jump to the same message lights it again
  item.classList.add("flash");
  flashes.set(item, setTimeout(() => item.classList.remove("flash"), FLASH_MS));
}

function pill(text) {
  $("new-messages").textContent = text;
  $("new-messages").hidden = false;
}

// A word over the top of the messages ("Finding the message…"); `ms`: for that long only.
let noteTimer = null;
function paneNote(text, ms = 0) {
  clearTimeout(noteTimer);
  $("pane-note").textContent = text;
  if (ms) noteTimer = setTimeout(() => ($("pane-note").textContent = ""), ms);
}

// A live message (yours or someone's) in the open chat.
export function showMessage(message) {
  const follow = atBottom() || message.sender_uuid === state.me;
  place(message);
  renderDays();
  renderEmptyPane();
  if (follow) {
    scrollToEnd();
    markSeen();
  } else {
    pill("New messages ↓");
  }
}

export function updateMessage(id, change) {
  const message = messages.get(id);
  if (message) place(Object.assign(message, change));
}

// Someone (you, in this tab or another) edited a message: its new text, if it is on screen.
// The reply to this tab's own edit closes the editor.
export function messageEdited(message, requestId) {
  if (!messages.has(message.id)) return;
  messages.set(message.id, message);
  if (requestId === `edit:${message.id}` && editing?.id === message.id) endEdit(true);
  else redraw(message.id);
  renderQuotes(); // the replies quoting it
  if (replying === message.id) renderReplyBar();
}

// A message was deleted (by its sender, or by the group's owner): it goes from the screen, and
// the replies quoting it say "deleted message".
export function messageDeleted({ id }) {
  gone.add(id);
  if (replying === id) {
    endReply(false);
    note("The message you were replying to was deleted.");
  }
  const item = itemOf(id);
  if (!messages.delete(id) || !item) return renderQuotes();
  const hadFocus = item.contains(document.activeElement);
  if (editing?.id === id) editing = null;
  if (confirming === id) confirming = null;
  refusals.delete(id);
  item.remove();
  renderDays();
  renderEmptyPane();
  renderQuotes();
  if (hadFocus) $("text").focus(); // the keyboard's place went with it
}

function atBottom() {
  const scroller = $("scroller");
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_PX;
}

// Something under the messages (the typing line) came or went, and their pane shrank or grew:
// a view that was at the bottom stays there.
export function keepAtBottom(change) {
  const follow = atBottom();
  change();
  if (follow) $("scroller").scrollTop = $("scroller").scrollHeight;
}

function scrollToEnd() {
  $("scroller").scrollTop = $("scroller").scrollHeight;
  $("new-messages").hidden = true;
}

// Messages you can see in the open chat are marked read: the open chat's unread ones, once
// you are at the bottom of it and the tab is not hidden.
export function markSeen() {
  const ids = [...(state.unread.get(state.open) || [])];
  if (!ids.length || document.hidden || !atBottom()) return;
  for (let i = 0; i < ids.length; i += 1000) {
    send({ action: "mark_read", message_ids: ids.slice(i, i + 1000), request_id: "mark-read" });
  }
  state.unread.delete(state.open);
  renderChats();
}
document.addEventListener("visibilitychange", markSeen);

// --- Drawing messages ----------------------------------------------------------------------

// Put a message on screen in id order, or redraw it if it is there already.
function place(message) {
  messages.set(message.id, message);
  const list = $("messages");
  const existing = list.querySelector(`li.message[data-id="${message.id}"]`);
  if (existing) return fillMessage(existing, message);
  const items = list.querySelectorAll("li.message");
  const last = items[items.length - 1];
  // Usually the newest (it goes last) or older history (it goes first): look only when it is not.
  const later = last && Number(last.dataset.id) > message.id;
  const next = later && [...items].find((item) => Number(item.dataset.id) > message.id);
  list.insertBefore(messageItem(message), next || null);
}

function messageItem(message) {
  const item = el("li", "message");
  item.dataset.id = message.id;
  const bar = el("div", "actions");
  bar.setAttribute("role", "group");
  bar.setAttribute("aria-label", "Message actions");
  const problem = el("p", "field-error");
  problem.setAttribute("aria-live", "polite");
  item.append(el("span", "who"));
  if (message.reply_to != null) {
    const quote = button("", "quote", "quote");
    quote.append(el("span", "quote-who"), el("span", "quote-text"));
    item.append(quote);
  }
  item.append(el("div", "text"), el("span", "meta"), bar, problem);
  fillMessage(item, message);
  return item;
}

// Draw a message into its element; while it is being edited, its editor stays as it is.
function fillMessage(item, message) {
  const mine = message.sender_uuid === state.me;
  item.classList.toggle("mine", mine);
  item.dataset.status = message.read_status;
  const chat = state.chats.get(message.chat_id);
  const who = item.querySelector(":scope > .who");
  who.textContent = !mine && chat?.type === "group" ? nameOf(message.sender_uuid) : "";
  who.hidden = !who.textContent;
  fillQuote(item, message);
  const text = item.querySelector(":scope > .text");
  if (text) text.textContent = message.text;
  item.querySelector(":scope > .meta").replaceChildren(...metaOf(message, mine));
  item.querySelector(":scope > .field-error").textContent = refusals.get(message.id) || "";
  renderActions(item, message);
}

// "edited · 14:05 ✓ delivered": when it was edited on hover, as its time says when it was sent.
function metaOf(message, mine) {
  const parts = [];
  if (message.edited_at) {
    const edited = el("span", "edited", "edited");
    edited.title = `Edited ${fullTime(new Date(message.edited_at))}`;
    parts.push(edited, " · ");
  }
  const sent = new Date(message.timestamp);
  const time = el("time", "", clockTime(sent));
  time.dateTime = message.timestamp;
  time.title = fullTime(sent); // the whole date and time on hover
  parts.push(time);
  if (mine) {
    const read = message.read_status === "read";
    parts.push(el("span", read ? "mark read" : "mark", read ? " ✓✓ read" : " ✓ delivered"));
  }
  return parts;
}

// --- Replies ---------------------------------------------------------------------------------
// A reply shows what it answers above its text: the sender and the start of the original, or
// "deleted message", or "message not loaded" while the original is older than the history on
// screen. A click on the quote takes you to the original, paging back to it if need be.

// The original is gone if it was deleted while the chat was open, or if it would be on screen
// and is not: within the unbroken stretch of history shown, or the history is all there.
function isGone(id) {
  return gone.has(id) || complete || id > oldestId();
}

function fillQuote(item, message) {
  const quote = item.querySelector(":scope > .quote");
  if (!quote) return;
  const original = messages.get(message.reply_to);
  const kind = original ? "shown" : isGone(message.reply_to) ? "deleted" : "unloaded";
  const who = original ? nameOf(original.sender_uuid) : "";
  const text = original ? excerpt(original.text) : kind === "deleted" ? "deleted message" : "message not loaded";
  if (quote.dataset.kind === kind && quote.dataset.who === who && quote.dataset.text === text) return;
  Object.assign(quote.dataset, { kind, who, text });
  const whoSpan = quote.querySelector(".quote-who");
  whoSpan.textContent = who;
  whoSpan.hidden = !who;
  quote.querySelector(".quote-text").textContent = text;
  quote.disabled = kind === "deleted"; // nothing to go to
  quote.title = kind === "deleted" ? "" : "Show the message this replies to";
  const label = {
    shown: `Replying to ${who}: ${text}`,
    deleted: "Replying to a deleted message",
    unloaded: "Replying to an earlier message, not loaded yet",
  };
  quote.setAttribute("aria-label", label[kind]);
}

// The quotes of every reply on screen, after what they quote may have changed.
function renderQuotes() {
  for (const quote of $("messages").querySelectorAll("li.message > .quote")) {
    const item = quote.parentElement;
    fillQuote(item, messages.get(Number(item.dataset.id)));
  }
}

// Reply: the message is quoted above the composer, with a ✕ (or Esc) to drop it; the next
// message sent replies to it.
function beginReply(id) {
  if (!messages.has(id)) return;
  replying = id;
  renderReplyBar();
  $("text").focus();
}

function endReply(refocus) {
  const had = replying !== null;
  replying = null;
  renderReplyBar();
  if (had && refocus) $("text").focus();
}

function renderReplyBar() {
  const message = replying !== null ? messages.get(replying) : null;
  if ($("reply-bar").hidden !== !message) keepAtBottom(() => ($("reply-bar").hidden = !message));
  $("text").setAttribute("aria-describedby", message ? "reply-quote composer-note" : "composer-note");
  if (!message) return;
  const mine = message.sender_uuid === state.me;
  $("reply-bar").querySelector(".quote-who").textContent = mine
    ? "Replying to yourself"
    : `Replying to ${nameOf(message.sender_uuid)}`;
  $("reply-excerpt").textContent = excerpt(message.text);
}

$("reply-cancel").addEventListener("click", () => endReply(true));
$("reply-quote").addEventListener("click", () => replying !== null && jumpTo(replying));

// --- Editing and deleting ------------------------------------------------------------------
// Each message you may change carries its buttons, shown on hover, on keyboard focus, and on
// a tap or long press (a phone has no hover). Delete asks first, in the message itself: a
// dialog box would take the page away from you.

function mayEdit(message) {
  return message.sender_uuid === state.me;
}

// Your own messages, and in a group you own, anyone's.
function mayDelete(message) {
  const chat = state.chats.get(message.chat_id);
  return mayEdit(message) || (chat?.type === "group" && chat.owner === state.me);
}

function renderActions(item, message) {
  const bar = item.querySelector(":scope > .actions");
  const focused = bar.contains(document.activeElement) && document.activeElement.dataset.act;
  const asking = confirming === message.id;
  item.classList.toggle("confirming", asking);
  if (editing?.id === message.id) {
    bar.replaceChildren(); // the editor has buttons of its own
  } else if (asking) {
    const question = el("span", "question", "Delete this message?");
    bar.replaceChildren(question, button("Delete", "danger", "delete-yes"), button("Cancel", "secondary", "delete-no"));
  } else {
    const buttons = [button("Reply", "secondary", "reply")];
    if (mayEdit(message)) buttons.push(button("Edit", "secondary", "edit"));
    if (mayDelete(message)) buttons.push(button("Delete", "secondary", "delete"));
    bar.replaceChildren(...buttons);
  }
  if (focused) bar.querySelector(`[data-act="${focused}"]`)?.focus(); // a redraw keeps your place
}

function itemOf(id) {
  return $("messages").querySelector(`li.message[data-id="${id}"]`);
}

function redraw(id) {
  const item = itemOf(id);
  if (item && messages.has(id)) fillMessage(item, messages.get(id));
}

const ACTS = {
  reply: beginReply,
  quote: (id) => messages.has(id) && jumpTo(messages.get(id).reply_to),
  edit: beginEdit,
  "edit-cancel": () => endEdit(true),
  delete: askDelete,
  "delete-yes": deleteMessage,
  "delete-no": () => cancelDelete(true),
};

$("messages").addEventListener("click", (event) => {
  const item = event.target.closest("li.message");
  if (!item) return;
  const act = event.target.closest("[data-act]")?.dataset.act;
  if (act) ACTS[act](Number(item.dataset.id));
  else if (!event.target.closest(".editor") && touchOnly()) toggleActions(item);
});

// A long press on a touch screen: the message's actions rather than the browser's menu.
$("messages").addEventListener("contextmenu", (event) => {
  const item = event.target.closest("li.message");
  if (!item || item.classList.contains("editing") || !touchOnly()) return;
  event.preventDefault();
  if (!item.classList.contains("show-actions")) toggleActions(item);
});

$("messages").addEventListener("keydown", (event) => {
  if (event.key === "Escape" && confirming !== null) cancelDelete(true);
});

function touchOnly() {
  return matchMedia("(hover: none)").matches;
}

// A tap shows a message's actions (and hides any other's); a second tap hides them.
function toggleActions(item) {
  if (!getSelection().isCollapsed) return; // that was selecting text
  const show = !item.classList.contains("show-actions") && item.querySelector(":scope > .actions").childElementCount > 0;
  $("messages").querySelectorAll(".show-actions").forEach((other) => other.classList.remove("show-actions"));
  item.classList.toggle("show-actions", show);
}

// The text becomes a textarea holding it: Enter saves, Shift+Enter is a new line, Esc cancels.
function beginEdit(id) {
  const message = messages.get(id);
  const item = itemOf(id);
  if (!message || !item) return;
  endEdit(false); // one at a time
  cancelDelete(false);
  const area = el("textarea");
  area.id = `edit-${id}`;
  area.value = message.text;
  area.maxLength = 4000;
  area.rows = Math.min(8, message.text.split("\n").length + 1);
  area.setAttribute("aria-label", "Edit your message");
  area.setAttribute("aria-describedby", `edit-${id}-hint edit-${id}-error`);
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      saveEdit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      endEdit(true);
    }
  });
  const hint = el("p", "hint", "Enter saves, Shift+Enter starts a new line, Esc cancels.");
  hint.id = `edit-${id}-hint`;
  const problem = el("p", "field-error");
  problem.id = `edit-${id}-error`;
  problem.setAttribute("aria-live", "polite");
  const row = el("div", "row");
  row.append(el("button", "", "Save"), button("Cancel", "secondary", "edit-cancel"));
  const form = el("form", "editor");
  form.append(area, hint, row, problem);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveEdit();
  });
  item.querySelector(":scope > .text").replaceWith(form);
  item.classList.add("editing");
  item.classList.remove("show-actions");
  editing = { id, form, area };
  renderActions(item, message);
  area.focus();
  area.setSelectionRange(area.value.length, area.value.length);
}

function saveEdit() {
  const { id, area } = editing;
  const text = area.value;
  if (!text.trim()) return setProblem(area.id, "A message cannot be empty: to remove it, use Delete.");
  if (text === messages.get(id).text) return endEdit(true); // nothing changed: nothing to send
  if (!send({ action: "edit_message", message_id: id, text, request_id: `edit:${id}` })) {
    return setProblem(area.id, "You are offline. Your edit stays here: press Enter again once you are reconnected.");
  }
  setProblem(area.id, null);
}

// Back from the editor to the message; the keyboard, if it was in the editor, goes to Edit.
function endEdit(refocus) {
  if (!editing) return;
  const { id, form } = editing;
  const hadFocus = form.contains(document.activeElement);
  editing = null;
  const item = itemOf(id);
  if (!item || !messages.has(id)) return;
  form.replaceWith(el("div", "text"));
  item.classList.remove("editing");
  fillMessage(item, messages.get(id));
  if (refocus && hadFocus) item.querySelector('[data-act="edit"]')?.focus();
}

function askDelete(id) {
  endEdit(false);
  cancelDelete(false); // one question at a time
  confirming = id;
  refusals.delete(id);
  redraw(id);
  itemOf(id)?.querySelector('[data-act="delete-no"]')?.focus(); // Enter twice must not delete
}

function cancelDelete(refocus) {
  const id = confirming;
  if (id === null) return;
  confirming = null;
  redraw(id);
  if (refocus) itemOf(id)?.querySelector('[data-act="delete"]')?.focus();
}

function deleteMessage(id) {
  confirming = null;
  if (!send({ action: "delete_message", message_id: id, request_id: `delete:${id}` })) {
    refusals.set(id, "You are offline: delete it again once you are reconnected.");
  }
  redraw(id);
  $("text").focus(); // the message goes once the server has deleted it
}

// The server refused an edit or a delete: say why, in the message. False if it was neither.
export function changeRefused({ request_id: requestId, error, detail }) {
  const [kind, number] = String(requestId).split(":");
  const id = Number(number);
  if (kind === "edit") {
    const why = {
      not_found: "This message is no longer there: it was deleted.",
      forbidden: "Only its sender can edit a message.",
      rate_limited: "Too fast: wait a moment, then press Enter again.",
    };
    if (editing?.id === id) setProblem(editing.area.id, why[error] || `Not saved: ${detail}.`);
    return true;
  }
  if (kind === "delete") {
    const why = {
      not_found: "This message was deleted already.",
      forbidden: "Only its sender, or the group's owner, can delete it.",
      rate_limited: "Too fast: wait a moment, then delete it again.",
    };
    refusals.set(id, why[error] || `Not deleted: ${detail}.`);
    redraw(id);
    return true;
  }
  return false;
}

// A line above the first message of each day: "Today", "Yesterday", or the date.
function renderDays() {
  const list = $("messages");
  list.querySelectorAll("li.day").forEach((line) => line.remove());
  let previous = null;
  for (const item of [...list.children]) {
    const day = dayLabel(new Date(messages.get(Number(item.dataset.id)).timestamp));
    if (day !== previous) list.insertBefore(el("li", "day", day), item);
    previous = day;
  }
}

// What to do next when there is nothing to read.
export function renderEmptyPane() {
  let text = "";
  if (state.open === null) {
    $("chat-title").textContent = state.chats.size ? "Pick a chat" : "Welcome";
    text = state.chats.size
      ? "Pick a chat from the list to read it."
      : "No chats yet. Start one from “New chat”: tick the people you want to talk to.";
  } else if (shown === state.open && !messages.size) {
    text = "No messages here yet. Say hello 👋";
  }
  $("pane-empty").textContent = text;
  $("pane-empty").hidden = !text;
}

// --- The composer ---------------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  const clientMsgId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  // The client_msg_id doubles as the request_id: a refusal names the text to give back.
  const command = { action: "send_message", chat_id: state.open, text, client_msg_id: clientMsgId };
  if (replying !== null) command.reply_to = replying;
  if (!send({ ...command, request_id: clientMsgId })) {
    note("You are offline: your message stays here until you are reconnected.");
    return;
  }
  pending.set(clientMsgId, command);
  $("text").value = "";
  endReply(false);
  note("");
});

$("text").addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter is a new line, and so is Enter while an input method is composing.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  } else if (event.key === "Escape" && replying !== null) {
    event.preventDefault();
    endReply(true);
  }
});

function note(text) {
  $("composer-note").textContent = text;
}

// The composer while the socket is away: marked offline; what you type stays.
export function setComposerOnline(online) {
  $("composer").classList.toggle("offline", !online);
  $("send").disabled = !online;
  note(online ? "" : "Offline: reconnecting. What you type stays here.");
  if (online) resendPending();
}

// Sends the socket dropped before they were answered go again: their client_msg_id makes
// the server store each once, however often it is sent.
function resendPending() {
  for (const [clientMsgId, command] of pending) send({ ...command, request_id: clientMsgId });
}

// The server stored a send: nothing to send again.
export function sendAnswered(clientMsgId) {
  pending.delete(clientMsgId);
}

// The server refused a send: give the text back (unless you have typed on) and say why.
export function sendRefused({ request_id: clientMsgId, error, detail }) {
  const command = pending.get(clientMsgId);
  if (!command) return false;
  pending.delete(clientMsgId);
  if (!$("text").value) $("text").value = command.text;
  const original = command.reply_to;
  if (original && command.chat_id === state.open && replying === null && messages.has(original)) {
    replying = original; // the reply goes back with its text
    renderReplyBar();
  }
  if (error === "rate_limited") note("Sending too fast: wait a moment, then send again.");
  else if (original && !messages.has(original)) note("Not sent: the message you replied to was deleted.");
  else note(`Not sent: ${detail}.`);
  return true;
}
