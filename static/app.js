// The browser client: plain JavaScript modules, no build step. This one signs you up and in,
// and routes what the socket says to the chat list (chats.js), the open chat (pane.js), a
// group's members (members.js), the people picker (people.js), who is typing (typing.js) and
// the search results (search.js); connection.js keeps the socket up, and resumes where the
// page left off.
import { loadChats, noteUnread, notify, renderChats, renderNotifyButton, showNotice } from "./chats.js";
import {
  $,
  api,
  chatTitle,
  clearSession,
  forgetCursors,
  loadCursor,
  loadSession,
  saveCursor,
  saveSession,
  setProblem,
  state,
} from "./common.js";
import { connect } from "./connection.js";
import { membersAnswered, membersRefused, renderMembers } from "./members.js";
import {
  changeRefused,
  chatChanged,
  closeChat,
  markSeen,
  messageDeleted,
  messageEdited,
  openChat,
  refreshOpenChat,
  sendAnswered,
  sendRefused,
  setComposerOnline,
  showMessage,
  updateMessage,
} from "./pane.js";
import { chatRefused, chatStarted, isListed, openPicker, refreshPeople, renderPresence } from "./people.js";
import { renderSearch, searchMessageDeleted, searchMessageEdited } from "./search.js";
import { heardTyping, stoppedTyping } from "./typing.js";

// --- Signing up and in ---------------------------------------------------------------------

const FIELDS = ["name", "email", "password"];

// Every problem with the form at once, in plain words: {field: text}.
function problems(signingUp) {
  const found = {};
  const name = $("name").value.trim();
  const email = $("email").value.trim();
  const password = $("password").value;
  if (signingUp) {
    if (!name) found.name = "Enter your name: it is what the others see.";
    else if ([...name].length > 100) found.name = "Use at most 100 characters.";
    else if (/[\p{Cc}\p{Cf}]/u.test(name)) found.name = "Leave out invisible characters (such as zero-width spaces).";
  }
  if (!email) found.email = "Enter your email address.";
  else if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) found.email = "Enter an email address like name@example.com.";
  if (!password) found.password = "Enter a password.";
  else if (signingUp && [...password].length < 8) found.password = "Use at least 8 characters.";
  else if (signingUp && new TextEncoder().encode(password).length > 72) {
    found.password = "Use at most 72 characters (fewer with accented letters or emoji).";
  }
  return found;
}

function showProblems(found, general = "") {
  FIELDS.forEach((field) => setProblem(field, found[field]));
  $("auth-error").textContent = general;
  const first = FIELDS.find((field) => found[field]);
  if (first) $(first).focus();
}

// What the server's refusal means for you, next to the field it is about.
function explain(error) {
  if (error.status === 0) return [{}, "The server cannot be reached. Check your connection and try again."];
  if (error.code === "email_taken") return [{ email: "There is already an account with this email: log in instead." }];
  if (error.code === "invalid_credentials") return [{}, "Wrong email or password."];
  if (error.retryAfter) return [{}, `The server is busy. Try again in ${error.retryAfter} s.`];
  const field = FIELDS.find((f) => error.message.startsWith(f));
  const plain = {
    name: "Use 1 to 100 characters, without invisible ones.",
    email: "Enter an email address like name@example.com.",
    password: "Use at least 8 characters (at most 72).",
  };
  return field ? [{ [field]: plain[field] }] : [{}, `Something went wrong: ${error.message}.`];
}

async function submit(signingUp) {
  const found = problems(signingUp);
  if (Object.keys(found).length) return showProblems(found);
  showProblems({});
  const email = $("email").value.trim();
  const password = $("password").value;
  $("login").disabled = $("register").disabled = true;
  try {
    if (signingUp) {
      const account = { name: $("name").value, email, password };
      const user = await api("/register", { method: "POST", body: JSON.stringify(account) });
      state.name = user.name;
    }
    const body = await api("/login", { method: "POST", body: JSON.stringify({ email, password }) });
    Object.assign(state, { token: body.access_token, me: body.user_uuid, email });
    if (body.name) state.name = body.name;
    saveSession($("remember").checked);
    forgetCursors(); // a new session starts from nothing
    await start();
  } catch (error) {
    showProblems(...explain(error));
  } finally {
    $("login").disabled = $("register").disabled = false;
  }
}

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submit(false);
});
$("register").addEventListener("click", () => submit(true));

function logOut() {
  clearSession();
  location.reload();
}
$("logout").addEventListener("click", logOut);

async function start() {
  try {
    await refreshPeople(); // and a token that is no longer good is found out here
  } catch (error) {
    if (error.status === 401) return logOut();
    // Otherwise the server is away: the connection below keeps trying, and loads the rest.
  }
  renderMe();
  renderNotifyButton();
  loadCursor(); // after a reload of this tab: the socket resumes where the page was
  $("auth").hidden = true;
  $("app").hidden = false;
  connect({ onFrame: handle, onOnline: setComposerOnline, onRefused: logOut });
}

function renderMe() {
  $("me").textContent = state.name || state.email;
  $("me").title = state.email ? `Signed in as ${state.email}` : "";
}

// Until /login says your name, the members of your chats do.
function learnMyName() {
  if (state.name) return;
  const me = [...state.chats.values()].flatMap((chat) => chat.members).find((m) => m.user_uuid === state.me);
  if (!me) return;
  state.name = me.name;
  saveSession(localStorage.getItem("token") === state.token);
  renderMe();
}

// --- What the socket says ----------------------------------------------------------------------

let loaded = false; // this page has read its chats (a reload starts again from nothing)
let synced = false; // what the page shows is the stream up to state.cursor

const handlers = {
  // The first frame on every connection: what is unread now, page by page. Resumed, the frames
  // missed since the page's cursor follow it, and bring the chat list and the open chat up to
  // date; otherwise (a first connect, a reload, a cursor too old) they are read afresh.
  async unread_messages({ data, more, resumed }) {
    synced = false;
    state.unread.clear();
    data.forEach(noteUnread);
    while (more && data.length) {
      const page = await api(`/unread?after_id=${data[data.length - 1].id}`);
      page.messages.forEach(noteUnread);
      ({ messages: data, more } = page);
    }
    if (resumed && loaded) {
      renderChats();
      markSeen(); // the open chat's unread messages are drawn by the missed frames next in line
    } else {
      await loadChats(); // counts and order as they are now
      loaded = true;
      if (state.open !== null && !state.chats.has(state.open)) closeChat(); // you left it elsewhere meanwhile
      if (state.open !== null) await refreshOpenChat();
      renderSearch(); // chats renamed or left meanwhile
    }
    learnMyName();
    refreshPeople().catch(() => {}); // who is online is not in the stream: asked again
    synced = true;
  },
  async chat_created({ chat, request_id }) {
    if (!state.chats.has(chat.id)) {
      // Someone else's new chat may name people you do not know of yet: /chats names them.
      if (chat.members.some((uuid) => uuid !== state.me && !state.names.has(uuid))) await loadChats();
      else {
        const members = chat.members.map((uuid) => ({ user_uuid: uuid, name: state.names.get(uuid) || state.name }));
        state.chats.set(chat.id, { ...chat, members, last_message: null });
      }
    }
    renderChats();
    if (request_id === "new-chat") {
      chatStarted();
      openChat(chat.id);
    }
  },
  message_sent({ data, request_id }) {
    sendAnswered(request_id);
    receive(data);
  },
  // A missed message a resume brings again is unread only if its unread frame said so (and
  // counted it): one it left out was read meanwhile, on another device. Either way it is not
  // news to notify of. It may be on the page already (keep messages by id).
  new_message({ data }, replayed) {
    stoppedTyping(data.chat_id, data.sender_uuid);
    if (data.sender_uuid !== state.me && !replayed) {
      noteUnread(data);
      notify(data);
    }
    // A chat you do not know of: new (/chats has it), or, for a missed message, one you have
    // left since (its chat_removed is on its way).
    if (!state.chats.has(data.chat_id)) return replayed ? undefined : loadChats();
    receive(data);
  },
  messages_read({ data }) {
    data.forEach(({ id }) => updateMessage(id, { read_status: "read" }));
  },
  marked_read() {},
  // An edit (yours from this tab or another, or someone's): the open chat, and the chat
  // list's preview when it is the chat's last message.
  message_edited({ data, request_id }) {
    messageEdited(data, request_id);
    searchMessageEdited(data);
    const chat = state.chats.get(data.chat_id);
    if (chat?.last_message?.id !== data.id) return;
    chat.last_message = data;
    renderChats();
  },
  // A deleted message leaves the open chat and the unread counts; if it was the chat's last
  // message, /chats says which one is the last now.
  async message_deleted({ data }) {
    const unread = state.unread.get(data.chat_id);
    unread?.delete(data.id);
    if (unread && !unread.size) state.unread.delete(data.chat_id);
    messageDeleted(data);
    searchMessageDeleted(data.id);
    if (state.chats.get(data.chat_id)?.last_message?.id === data.id) await loadChats();
    else renderChats();
  },
  // A group's members, name or owner changed, or you were added to one (its history is then
  // yours to read, and nothing of it unread): /chats names people you may not know of yet.
  async chat_updated({ chat, request_id }) {
    const known = state.chats.get(chat.id);
    if (!known || chat.members.some((uuid) => uuid !== state.me && !state.names.has(uuid))) await loadChats();
    else {
      const named = (uuid) => known.members.find((m) => m.user_uuid === uuid)?.name || state.names.get(uuid);
      const members = chat.members.map((uuid) => ({ user_uuid: uuid, name: named(uuid) || state.name }));
      Object.assign(known, { name: chat.name, owner: chat.owner, members });
      renderChats();
    }
    chatChanged(chat.id);
    renderSearch(); // a renamed group's results
    if (request_id !== undefined) membersAnswered(request_id);
  },
  // You left a group (the reply to leave_chat carries its request_id) or were taken out of it.
  chat_removed({ chat_id: id, request_id }) {
    const chat = state.chats.get(id);
    state.chats.delete(id);
    state.unread.delete(id);
    const wasOpen = state.open === id;
    if (wasOpen) closeChat();
    if (chat) {
      const title = chatTitle(chat);
      showNotice(request_id !== undefined ? `You left “${title}”.` : `You are no longer in “${title}”.`);
      if (wasOpen) $("notice").focus(); // the chat you were in is gone: say why, where you are now
    }
    renderChats();
    renderSearch(); // its messages leave the results
  },
  typing: heardTyping,
  presence({ data }) {
    if (data.online) state.online.add(data.user_uuid);
    else state.online.delete(data.user_uuid);
    if (!isListed(data.user_uuid)) refreshPeople().catch(() => {});
    renderPresence();
    renderChats();
    renderMembers();
  },
  error(frame) {
    if (frame.request_id === "typing") return; // a chat gone meanwhile, say: no news
    if (frame.request_id === "new-chat") return chatRefused(frame);
    if (sendRefused(frame) || changeRefused(frame) || membersRefused(frame)) return;
    // A mark_read: what it would have marked comes back in the next connection's unread frame.
    console.warn("refused:", frame.error, frame.detail);
  },
};

let handled = Promise.resolve(); // the frames before this one, handled in turn

// One frame at a time, in the order they came: the missed frames of a resume go on top of what
// its unread frame set up, and a frame's cursor is kept only once it is on the page (and all
// before it). A request that fails on the way (the server going away mid-page) leaves the page
// behind the stream: its cursor is forgotten, and the next connection loads everything afresh.
function handle(frame, replayed) {
  const handler = handlers[frame.action];
  if (!handler) return;
  handled = handled
    .then(() => handler(frame, replayed))
    .then(
      () => synced && frame.cursor && saveCursor(frame.cursor),
      (error) => {
        synced = false;
        saveCursor(null);
        console.warn(frame.action, error);
      },
    );
}

// A message arrived (yours or someone's): update its chat, and show it if that chat is open.
// A missed one may be older than the chat's last message (yours, sent just before the socket
// dropped): the preview stays the newest.
function receive(message) {
  const chat = state.chats.get(message.chat_id);
  if (chat && !(chat.last_message?.id > message.id)) chat.last_message = message;
  if (message.chat_id === state.open) showMessage(message);
  renderChats();
}

// --- The rest of the page ----------------------------------------------------------------------

$("back").addEventListener("click", closeChat);
$("start-one").addEventListener("click", openPicker);

if (loadSession()) start();
