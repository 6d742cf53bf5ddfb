// What the other modules share: the page's state, the session, the HTTP helper, names and dates.
// Text from the server is only ever put on the page with textContent, never as HTML.

export const $ = (id) => document.getElementById(id);

export const state = {
  token: null,
  me: null, // your user uuid
  name: null, // your name, for the header
  email: null,
  names: new Map(), // user uuid -> name
  chats: new Map(), // chat id -> {id, type, name, members: [{user_uuid, name}], owner, last_message}
  people: [], // everyone else, as /users_list said last: [{user_uuid, name, online}]
  unread: new Map(), // chat id -> Set of message ids you have not marked read
  online: new Set(), // uuids of users with a socket open
  open: null, // the open chat's id
  cursor: null, // where the page is in the server's event stream (see saveCursor)
};

// --- The session ---------------------------------------------------------------------
// In sessionStorage (a closed tab logs you out) unless you asked to be kept signed in on
// this device, which puts it in localStorage.

const KEYS = ["token", "me", "name", "email"];

export function loadSession() {
  const store = [sessionStorage, localStorage].find((s) => s.getItem("token"));
  if (store) KEYS.forEach((key) => (state[key] = store.getItem(key)));
  return Boolean(store);
}

export function saveSession(remember) {
  const store = remember ? localStorage : sessionStorage;
  KEYS.forEach((key) => state[key] && store.setItem(key, state[key]));
}

export function clearSession() {
  for (const store of [sessionStorage, localStorage]) KEYS.forEach((key) => store.removeItem(key));
  forgetCursors();
}

// --- The stream's cursor ---------------------------------------------------------------
// The cursor of the last frame the page has taken in: reconnecting with it (since=) brings
// what was missed meanwhile, after a dropped socket or a reload of this tab. In
// sessionStorage, under the user's uuid: one person's cursor is never another's, and
// logging in or out forgets them all.

const cursorKey = () => `cursor:${state.me}`;

export function loadCursor() {
  state.cursor = sessionStorage.getItem(cursorKey());
}

// null forgets it: the next connection then loads everything afresh.
export function saveCursor(cursor) {
  state.cursor = cursor;
  if (cursor) sessionStorage.setItem(cursorKey(), cursor);
  else sessionStorage.removeItem(cursorKey());
}

export function forgetCursors() {
  state.cursor = null;
  const keys = Array.from({ length: sessionStorage.length }, (_, i) => sessionStorage.key(i));
  keys.filter((key) => key.startsWith("cursor:")).forEach((key) => sessionStorage.removeItem(key));
}

// --- HTTP ----------------------------------------------------------------------------

// The JSON body, or an Error carrying the status, the error code and Retry-After (in seconds).
// A server that cannot be reached throws with status 0.
export async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw Object.assign(new Error("The server cannot be reached."), { status: 0 });
  }
  const body = response.status === 204 ? null : await response.json().catch(() => ({}));
  if (!response.ok) {
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    const error = new Error(body.detail || body.error || `HTTP ${response.status}`);
    throw Object.assign(error, { status: response.status, code: body.error, retryAfter });
  }
  return body;
}

// --- Small helpers -------------------------------------------------------------------------

// An element with a class and text (always as text, never as HTML).
export function el(tag, className = "", text = "") {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text) element.textContent = text;
  return element;
}

// A button that does not submit a form; `act` names what it does, for a click handler shared
// by many of them (and for finding it again after a redraw).
export function button(text, className = "", act = "") {
  const element = el("button", className, text);
  element.type = "button";
  if (act) element.dataset.act = act;
  return element;
}

// The start of a message's text on one line, for a quote: "Can you look at the invoice e…".
export function excerpt(text, length = 100) {
  const line = text.replace(/\s+/g, " ").trim();
  if (line.length <= length) return line;
  let end = length;
  if (/[\uD800-\uDBFF]/.test(line[end - 1])) end -= 1; // not half an emoji
  return `${line.slice(0, end).trimEnd()}…`;
}

export function nameOf(uuid) {
  return uuid === state.me ? "You" : state.names.get(uuid) || "Someone";
}

export function chatTitle(chat) {
  if (chat.type === "group") return chat.name;
  const other = chat.members.find((m) => m.user_uuid !== state.me);
  return other ? other.name : "Private chat";
}

// --- Dates -----------------------------------------------------------------------------------

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate());
}

// "Today", "Yesterday", or the date (with the year only when it is not this one).
export function dayLabel(date) {
  const days = Math.round((startOfDay(new Date()) - startOfDay(date)) / 86_400_000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  const options = { weekday: "long", day: "numeric", month: "long" };
  if (date.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
  return date.toLocaleDateString([], options);
}

export function clockTime(date) {
  return date.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
}

// For a tooltip: the whole date and time.
export function fullTime(date) {
  return date.toLocaleString([], { dateStyle: "full", timeStyle: "medium" });
}

// For the chat list: the time today, else "Yesterday" or a short date.
export function shortWhen(date) {
  const label = dayLabel(date);
  if (label === "Today") return clockTime(date);
  if (label === "Yesterday") return label;
  return date.toLocaleDateString([], { day: "numeric", month: "short" });
}

// A refusal, shown next to the control that caused it (`${id}-error`, read out by screen
// readers); no text clears it.
export function setProblem(id, text) {
  $(`${id}-error`).textContent = text || "";
  const control = $(id);
  if (!control.matches("input, textarea")) return;
  if (text) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}
