// Searching your messages: what you type in the box above the chat list goes to GET /search
// (every word must occur, each one as the start of a word of the message), and the messages
// found take the chat list's place, newest first, with the words that matched marked. A click
// opens the chat at that message; ✕ or Esc brings the chat list back. The marks are <mark>
// elements made here around text nodes: a message's text never becomes HTML.
import { $, api, chatTitle, el, fullTime, nameOf, shortWhen, state } from "./common.js";
import { showMessageAt } from "./pane.js";

const LIMIT = 20; // results a page
const DEBOUNCE_MS = 300; // typing searches once you pause; Enter searches at once
const SNIPPET_CHARS = 400; // of a long message, this much is shown, from just before a match
// A word, as the server splits text into words: letters and digits; anything else separates.
const WORD = /[\p{L}\p{M}\p{N}]+/gu;

let timer = null; // the search that waits for you to stop typing
let asked = 0; // bumps with every search: an answer to an older one is dropped
let query = null; // {q, words}: the search whose results are shown (null: the chat list is)
let results = []; // the messages found, newest first
let more = false; // an older page of results waits
let current = null; // the id of the result last opened

// The words of a search, lower-cased: "Deplo, staging!" -> ["deplo", "staging"].
export function queryWords(q) {
  return [...new Set((q.match(WORD) || []).map((word) => word.toLowerCase()))];
}

function matches(word, words) {
  const lower = word.toLowerCase();
  return words.some((start) => lower.startsWith(start));
}

// The text as nodes, each word that starts with one of `words` in a <mark>.
export function highlighted(text, words) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(WORD)) {
    if (!matches(match[0], words)) continue;
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    nodes.push(el("mark", "", match[0]));
    at = match.index + match[0].length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

// A long message from a little before its first match, so that the match is in view.
function snippet(text, words) {
  let from = 0;
  const first = [...text.matchAll(WORD)].find((match) => matches(match[0], words));
  if (first && first.index > 60) {
    const space = text.slice(0, first.index - 30).search(/\s\S*$/); // a word's start, before it
    from = space > 0 ? space + 1 : first.index;
  }
  let end = Math.min(text.length, from + SNIPPET_CHARS);
  if (end < text.length && /[\uD800-\uDBFF]/.test(text[end - 1])) end -= 1; // not half an emoji
  return `${from ? "…" : ""}${text.slice(from, end)}${end < text.length ? "…" : ""}`;
}

// --- The box ---------------------------------------------------------------------------------

$("search-input").addEventListener("input", () => {
  clearTimeout(timer);
  const q = $("search-input").value;
  $("search-clear").hidden = !q;
  if (!q.trim()) return closeResults();
  timer = setTimeout(() => search(q), DEBOUNCE_MS);
});

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(timer);
  const q = $("search-input").value;
  if (q.trim()) search(q);
});

$("search-input").addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  event.preventDefault();
  clearSearch();
});

$("search-clear").addEventListener("click", () => {
  clearSearch();
  $("search-input").focus();
});

$("search-more").addEventListener("click", () => query && search(query.q, true));

// Esc among the results, as in the box: back to the chat list, the keyboard back in the box.
$("search-results").addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  clearSearch();
  $("search-input").focus();
});

// Back to the chat list.
export function clearSearch() {
  clearTimeout(timer);
  $("search-input").value = "";
  $("search-clear").hidden = true;
  closeResults();
}

function closeResults() {
  asked += 1; // an answer still on its way is not shown
  query = null;
  results = [];
  more = false;
  current = null;
  $("result-list").replaceChildren();
  $("search-status").textContent = "";
  $("sidebar").classList.remove("searching");
  $("search-results").hidden = true;
}

// `next`: the page of results older than those shown (More results).
async function search(q, next = false) {
  if (next && !results.length) return;
  const ticket = ++asked;
  const words = queryWords(q);
  $("sidebar").classList.add("searching");
  $("search-results").hidden = false;
  if (!words.length) {
    query = null; // nothing to redraw
    results = [];
    more = false;
    $("result-list").replaceChildren();
    $("search-more").hidden = true;
    return status("Type a word to search for: letters or digits.", true);
  }
  const params = new URLSearchParams({ q, limit: LIMIT });
  if (next) params.set("before_id", results[results.length - 1].id);
  else status("Searching…");
  $("search-more").disabled = true;
  try {
    const { messages } = await api(`/search?${params}`);
    if (ticket !== asked) return;
    const known = new Set(next ? results.map((message) => message.id) : []);
    results = [...(next ? results : []), ...messages.filter((message) => !known.has(message.id))];
    more = messages.length === LIMIT;
    query = { q, words };
    if (!next) current = null;
    render();
    if (!next) $("search-results").scrollTop = 0;
  } catch (error) {
    if (ticket !== asked) return;
    if (error.status === 401) return location.reload(); // signed out meanwhile: sign in again
    const why = error.status === 0 ? "The server cannot be reached. Try again in a moment." : error.message;
    status(`Search failed: ${why}`, true);
  } finally {
    if (ticket === asked) $("search-more").disabled = false;
  }
}

function status(text, alone = false) {
  $("search-status").textContent = text;
  $("search-status").classList.toggle("alone", alone);
}

// --- The results -----------------------------------------------------------------------------

function render() {
  const list = $("result-list");
  const focused = list.contains(document.activeElement) && document.activeElement.closest("li").dataset.id;
  const found = results.filter((message) => state.chats.has(message.chat_id)); // not of a chat you left
  list.replaceChildren(...found.map(resultItem));
  if (focused) list.querySelector(`li[data-id="${focused}"] button`)?.focus();
  const count = found.length === 1 ? "1 message found" : `${found.length} messages found`;
  status(found.length ? count : "No messages found", !found.length);
  $("search-more").hidden = !more;
}

function resultItem(message) {
  const item = el("li");
  item.dataset.id = message.id;
  const open = el("button", "result");
  open.type = "button";
  if (message.id === current) open.setAttribute("aria-current", "true");
  const top = el("span", "top");
  top.append(el("strong", "title", chatTitle(state.chats.get(message.chat_id))));
  const sent = new Date(message.timestamp);
  const time = el("time", "when", shortWhen(sent));
  time.dateTime = message.timestamp;
  time.title = fullTime(sent);
  top.append(time);
  const text = el("span", "snippet");
  text.append(...highlighted(snippet(message.text, query.words), query.words));
  open.append(top, el("span", "from", nameOf(message.sender_uuid)), text);
  open.addEventListener("click", () => {
    current = message.id;
    resultButtons().forEach((other) => other.removeAttribute("aria-current"));
    open.setAttribute("aria-current", "true");
    showMessageAt(message.chat_id, message.id);
  });
  item.append(open);
  return item;
}

function resultButtons() {
  return $("result-list").querySelectorAll("button.result");
}

// What the results show changed: a message edited or deleted, a chat renamed or left.
export function searchMessageEdited(message) {
  const at = results.findIndex((result) => result.id === message.id);
  if (at < 0) return;
  results[at] = message;
  render();
}

export function searchMessageDeleted(id) {
  if (!results.some((result) => result.id === id)) return;
  results = results.filter((result) => result.id !== id);
  render();
}

export function renderSearch() {
  if (query) render();
}
