// The open chat: its messages a page of history at a time, a line for each day, the view
// following new messages (or a "New messages" pill when you have scrolled up), the composer.
import { renderChats } from "./chats.js";
import { $, api, chatTitle, clockTime, dayLabel, el, fullTime, nameOf, state } from "./common.js";
import { send } from "./connection.js";

const PAGE_SIZE = 50;
const NEAR_PX = 40; // this close to the bottom counts as at the bottom, to the top as the top
const messages = new Map(); // message id -> message, for the open chat
let loading = null; // {chatId, promise}: a page of history on its way
let shown = null; // the chat whose history is on screen (null while its first page loads)
const pending = new Map(); // client_msg_id -> send_message command not yet answered

export async function openChat(id) {
  const chat = state.chats.get(id);
  if (!chat) return;
  state.open = id;
  shown = null;
  messages.clear();
  $("messages").replaceChildren();
  $("older").hidden = true;
  $("new-messages").hidden = true;
  $("app").classList.add("in-chat");
  $("chat-title").textContent = chatTitle(chat);
  $("composer").hidden = false;
  renderChats();
  await loadOlder();
  if (state.open !== id) return; // another chat was opened meanwhile
  scrollToEnd();
  markSeen();
  $("text").focus();
}

export function closeChat() {
  const id = state.open;
  state.open = null;
  shown = null;
  $("app").classList.remove("in-chat");
  $("composer").hidden = true;
  messages.clear();
  $("messages").replaceChildren();
  $("older").hidden = true;
  renderChats();
  $("chat-list").querySelector(`li[data-id="${id}"] button`)?.focus();
}

// After a reconnect: the newest page again, merged with what is on screen. If more came
// meanwhile than a page holds, the gap would hide messages: start the chat afresh instead.
export async function refreshOpenChat() {
  const id = state.open;
  const { messages: page } = await api(`/history/${id}?page=1&page_size=${PAGE_SIZE}`);
  if (state.open !== id) return;
  const newest = Math.max(0, ...messages.keys());
  if (page.length === PAGE_SIZE && page[page.length - 1].id > newest) return openChat(id);
  const follow = atBottom();
  page.forEach(place);
  renderDays();
  renderEmptyPane();
  if (follow) scrollToEnd();
  markSeen();
}

// The page of history just older than what is on screen (the newest page at first).
async function loadOlder() {
  const chatId = state.open;
  if (loading?.chatId === chatId) return loading.promise;
  const query = messages.size ? `before_id=${Math.min(...messages.keys())}` : "page=1";
  const promise = api(`/history/${chatId}?${query}&page_size=${PAGE_SIZE}`).then(({ messages: page }) => {
    if (state.open !== chatId) return;
    page.forEach(place);
    renderDays();
    $("older").hidden = page.length < PAGE_SIZE;
    shown = chatId;
    renderEmptyPane();
  });
  loading = { chatId, promise };
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
    $("new-messages").hidden = false;
  }
}

export function updateMessage(id, change) {
  const message = messages.get(id);
  if (message) place(Object.assign(message, change));
}

function atBottom() {
  const scroller = $("scroller");
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_PX;
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
  fillMessage(item, message);
  return item;
}

function fillMessage(item, message) {
  const mine = message.sender_uuid === state.me;
  item.classList.toggle("mine", mine);
  item.dataset.status = message.read_status;
  const parts = [];
  const chat = state.chats.get(message.chat_id);
  if (!mine && chat && chat.type === "group") parts.push(el("span", "who", nameOf(message.sender_uuid)));
  const sent = new Date(message.timestamp);
  const time = el("time", "", clockTime(sent));
  time.dateTime = message.timestamp;
  time.title = fullTime(sent); // the whole date and time on hover
  const meta = el("span", "meta");
  meta.append(time);
  if (mine) {
    const read = message.read_status === "read";
    meta.append(el("span", read ? "mark read" : "mark", read ? " ✓✓ read" : " ✓ delivered"));
  }
  parts.push(el("div", "text", message.text), meta);
  item.replaceChildren(...parts);
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
  if (!send({ ...command, request_id: clientMsgId })) {
    note("You are offline: your message stays here until you are reconnected.");
    return;
  }
  pending.set(clientMsgId, command);
  $("text").value = "";
  note("");
});

$("text").addEventListener("keydown", (event) => {
  // Enter sends; Shift+Enter is a new line, and so is Enter while an input method is composing.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
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
  note(error === "rate_limited" ? "Sending too fast: wait a moment, then send again." : `Not sent: ${detail}.`);
  return true;
}
