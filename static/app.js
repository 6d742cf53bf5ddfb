// The browser client: plain JavaScript, no build step. Text from the server is only
// ever put on the page with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("token"),
  me: sessionStorage.getItem("me"),
  names: new Map(), // user uuid -> name
  chats: new Map(), // chat id -> {id, type, name, members, unread, last_message}
  messages: new Map(), // message id -> message, for the open chat
  unread: new Map(), // chat id -> Set of message ids the user has not marked read
  online: new Set(), // uuids of users with a socket open
  open: null, // the open chat's id
  ws: null,
  retries: 0,
};

// --- HTTP --------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) throw Object.assign(new Error(body.detail || body.error), { status: response.status });
  return body;
}

// --- Logging in and out ---------------------------------------------------------

async function logIn(email, password) {
  const body = await api("/login", { method: "POST", body: JSON.stringify({ email, password }) });
  state.token = body.access_token;
  state.me = body.user_uuid;
  sessionStorage.setItem("token", state.token);
  sessionStorage.setItem("me", state.me);
  sessionStorage.setItem("email", email);
  await start();
}

$("auth-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await logIn($("email").value, $("password").value);
  } catch (error) {
    $("auth-error").textContent = error.message;
  }
});

$("register").addEventListener("click", async () => {
  const body = { name: $("name").value, email: $("email").value, password: $("password").value };
  try {
    await api("/register", { method: "POST", body: JSON.stringify(body) });
    await logIn(body.email, body.password);
  } catch (error) {
    $("auth-error").textContent = error.message;
  }
});

function logOut() {
  sessionStorage.clear();
  location.reload();
}
$("logout").addEventListener("click", logOut);

async function start() {
  try {
    const { users } = await api("/users_list");
    users.forEach((user) => state.names.set(user.user_uuid, user.name));
    state.online = new Set(users.filter((user) => user.online).map((user) => user.user_uuid));
    renderPeople(users);
    await loadChats();
  } catch (error) {
    if (error.status === 401) return logOut();
    throw error;
  }
  $("me").textContent = sessionStorage.getItem("email");
  $("auth").hidden = true;
  $("app").hidden = false;
  connect();
}

// --- The socket -------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/connect?access_token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  ws.onmessage = (event) => handle(JSON.parse(event.data));
  ws.onopen = () => {
    state.retries = 0;
    $("status").hidden = true;
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    const delay = Math.min(30000, 500 * 2 ** state.retries++) * (0.8 + Math.random() * 0.4);
    $("status").textContent = `Disconnected — reconnecting in ${Math.ceil(delay / 1000)} s…`;
    $("status").hidden = false;
    setTimeout(async () => {
      try {
        await api("/users_list"); // a refused token means logging in again, not retrying
      } catch (error) {
        if (error.status === 401) return logOut();
      }
      connect();
    }, delay);
  };
}

function send(command) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(command));
    return true;
  }
  $("status").textContent = "Not connected — try again in a moment.";
  $("status").hidden = false;
  return false;
}

const handlers = {
  async unread_messages({ data, more }) {
    state.unread.clear();
    data.forEach(noteUnread);
    // The frame carries the oldest unread messages; the rest come a page at a time.
    while (more && data.length) {
      const page = await api(`/unread?after_id=${data[data.length - 1].id}`);
      page.messages.forEach(noteUnread);
      ({ messages: data, more } = page);
    }
    await loadChats(); // counts and order as they are now
    if (state.open) await openChat(state.open);
  },
  chat_created({ chat, request_id }) {
    if (!state.chats.has(chat.id)) {
      const members = chat.members.map((uuid) => ({ user_uuid: uuid, name: nameOf(uuid) }));
      state.chats.set(chat.id, { ...chat, members, unread: 0, last_message: null });
    }
    renderChats();
    if (request_id === "new-chat") openChat(chat.id);
  },
  message_sent({ data }) {
    receive(data);
  },
  new_message({ data }) {
    if (data.sender_uuid !== state.me) noteUnread(data);
    if (!state.chats.has(data.chat_id)) return loadChats();
    receive(data);
  },
  messages_read({ data }) {
    for (const { id } of data) {
      const message = state.messages.get(id);
      if (message) {
        message.read_status = "read";
        renderMessage(message);
      }
    }
  },
  marked_read() {},
  presence({ data }) {
    if (data.online) state.online.add(data.user_uuid);
    else state.online.delete(data.user_uuid);
    renderPresence();
    renderChats();
  },
  error({ error, detail }) {
    $("status").textContent = `${error}: ${detail}`;
    $("status").hidden = false;
  },
};

function handle(frame) {
  const handler = handlers[frame.action];
  if (handler) handler(frame);
}

function noteUnread(message) {
  if (!state.unread.has(message.chat_id)) state.unread.set(message.chat_id, new Set());
  state.unread.get(message.chat_id).add(message.id);
}

// A message arrived (ours or someone's): update its chat, show it if that chat is open.
function receive(message) {
  const chat = state.chats.get(message.chat_id);
  chat.last_message = message;
  if (message.chat_id === state.open) {
    state.messages.set(message.id, message);
    renderMessage(message);
    scrollToEnd();
    markSeen();
  }
  renderChats();
}

// Messages the user can see in the open chat are marked read.
function markSeen() {
  const ids = [...(state.unread.get(state.open) || [])];
  if (!ids.length || document.hidden) return;
  for (let i = 0; i < ids.length; i += 1000) send({ action: "mark_read", message_ids: ids.slice(i, i + 1000) });
  state.unread.delete(state.open);
  renderChats();
}
document.addEventListener("visibilitychange", () => state.open && markSeen());

// --- Chats --------------------------------------------------------------------------

async function loadChats() {
  const { chats } = await api("/chats");
  state.chats = new Map(chats.map((chat) => [chat.id, chat]));
  for (const chat of chats) chat.members.forEach((m) => state.names.set(m.user_uuid, m.name));
  renderChats();
}

function nameOf(uuid) {
  return uuid === state.me ? "you" : state.names.get(uuid) || "someone";
}

function chatTitle(chat) {
  if (chat.type === "group") return chat.name;
  const other = chat.members.find((m) => m.user_uuid !== state.me);
  return other ? other.name : "private chat";
}

function renderChats() {
  const activity = (chat) => (chat.last_message ? chat.last_message.id : 0);
  const chats = [...state.chats.values()].sort((a, b) => activity(b) - activity(a) || b.id - a.id);
  $("chat-list").replaceChildren(
    ...chats.map((chat) => {
      const item = document.createElement("li");
      item.dataset.id = chat.id;
      item.classList.toggle("open", chat.id === state.open);
      const other = chat.type === "private" && chat.members.find((m) => m.user_uuid !== state.me);
      item.classList.toggle("online", Boolean(other && state.online.has(other.user_uuid)));
      const text = document.createElement("div");
      const title = document.createElement("strong");
      title.textContent = chatTitle(chat);
      const preview = document.createElement("span");
      preview.className = "preview";
      preview.textContent = chat.last_message ? chat.last_message.text : "No messages yet";
      text.append(title, preview);
      item.append(text);
      const unread = (state.unread.get(chat.id) || new Set()).size;
      if (unread) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = unread;
        item.append(badge);
      }
      item.addEventListener("click", () => openChat(chat.id));
      return item;
    }),
  );
}

// A dot after the name of whoever is online, without redrawing the list (picks stay ticked).
function renderPresence() {
  for (const box of $("people").querySelectorAll("input")) {
    box.closest("li").classList.toggle("online", state.online.has(box.value));
  }
}

function renderPeople(users) {
  $("people").replaceChildren(
    ...users.map((user) => {
      const item = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = user.user_uuid;
      label.append(box, document.createTextNode(user.name));
      item.append(label);
      item.classList.toggle("online", state.online.has(user.user_uuid));
      return item;
    }),
  );
}

$("start-chat").addEventListener("click", () => {
  const picked = [...$("people").querySelectorAll("input:checked")].map((box) => box.value);
  const name = $("group-name").value.trim();
  if (!picked.length) return;
  const group = picked.length > 1 || name;
  if (group && !name) {
    $("group-name").focus();
    return;
  }
  const sent = send({
    action: "create_chat",
    type: group ? "group" : "private",
    name: group ? name : null,
    user_ids: picked,
    request_id: "new-chat",
  });
  if (sent) {
    $("people").querySelectorAll("input:checked").forEach((box) => (box.checked = false));
    $("group-name").value = "";
    $("new-chat").open = false;
  }
});

// --- The open chat ------------------------------------------------------------------

async function openChat(id) {
  const chat = state.chats.get(id);
  if (!chat) return;
  state.open = id;
  state.messages.clear();
  $("app").classList.add("in-chat");
  $("chat-title").textContent = chatTitle(chat);
  $("composer").hidden = false;
  $("messages").replaceChildren();
  await loadOlder();
  scrollToEnd();
  markSeen();
  renderChats();
  $("text").focus();
}

// The page of history just older than what is on screen (the newest page at first).
async function loadOlder() {
  const id = state.open;
  const query = state.messages.size ? `before_id=${Math.min(...state.messages.keys())}` : "page=1";
  const { messages } = await api(`/history/${id}?${query}&page_size=50`);
  if (state.open !== id) return;
  const first = $("messages").firstChild;
  for (const message of messages.reverse()) {
    if (state.messages.has(message.id)) continue;
    state.messages.set(message.id, message);
    const item = messageItem(message);
    first ? $("messages").insertBefore(item, first) : $("messages").append(item);
  }
  $("older").hidden = messages.length < 50;
}

$("older").addEventListener("click", async () => {
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  await loadOlder();
  scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep the view where it was
});
$("scroller").addEventListener("scroll", () => {
  if ($("scroller").scrollTop === 0 && !$("older").hidden) $("older").click();
});

function messageItem(message) {
  const item = document.createElement("li");
  item.className = "message";
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
  if (!mine && chat && chat.type === "group") {
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = nameOf(message.sender_uuid);
    parts.push(who);
  }
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = message.text;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = new Date(message.timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (mine) {
    const mark = document.createElement("span");
    const read = message.read_status === "read";
    mark.className = read ? "mark read" : "mark";
    mark.textContent = read ? " ✓✓ read" : " ✓ delivered";
    meta.append(mark);
  }
  parts.push(text, meta);
  item.replaceChildren(...parts);
}

function renderMessage(message) {
  const existing = $("messages").querySelector(`[data-id="${message.id}"]`);
  if (existing) fillMessage(existing, message);
  else $("messages").append(messageItem(message));
}

function scrollToEnd() {
  $("scroller").scrollTop = $("scroller").scrollHeight;
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  const clientMsgId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  if (send({ action: "send_message", chat_id: state.open, text, client_msg_id: clientMsgId })) $("text").value = "";
});
$("text").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("back").addEventListener("click", () => {
  state.open = null;
  $("app").classList.remove("in-chat");
  renderChats();
});

if (state.token) start();
