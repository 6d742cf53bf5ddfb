// Who is typing: "Alice is typing…" on a line under the open chat and in place of a chat's
// preview in the list, and telling the others while you type. The server keeps none of it: a
// push only says "typing now", so each one shows its typist for 6 s (the next push, 3 s on,
// keeps them shown), or until their message arrives.
import { renderChats } from "./chats.js";
import { $, nameOf, state } from "./common.js";
import { send } from "./connection.js";
import { keepAtBottom } from "./pane.js";

const SHOWN_MS = 6_000; // how long one push shows its typist
const EVERY_MS = 3_000; // one typing command this often at most, while the text box changes
const typists = new Map(); // chat id -> Map of user uuid -> the timer that hides them, first typist first
let told = { chatId: null, at: 0 }; // the last typing command sent

// Someone is typing in one of your chats (a push from the server).
export function heardTyping({ chat_id: chatId, user_uuid: uuid }) {
  if (uuid === state.me || !state.chats.has(chatId)) return;
  if (!typists.has(chatId)) typists.set(chatId, new Map());
  const inChat = typists.get(chatId);
  clearTimeout(inChat.get(uuid));
  inChat.set(uuid, setTimeout(() => stoppedTyping(chatId, uuid), SHOWN_MS));
  render();
}

// Their 6 s are up, or their message has arrived.
export function stoppedTyping(chatId, uuid) {
  const inChat = typists.get(chatId);
  if (!inChat?.has(uuid)) return;
  clearTimeout(inChat.get(uuid));
  inChat.delete(uuid);
  if (!inChat.size) typists.delete(chatId);
  render();
}

// "Alice is typing…", "Alice and Bob are typing…", "Alice, Bob and Carol are typing…",
// "Alice, Bob and 2 others are typing…"; "" when nobody is.
export function typingText(chatId) {
  const names = [...(typists.get(chatId)?.keys() || [])].map(nameOf);
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others are typing…`;
}

function render() {
  renderChats(); // the list's preview lines
  renderTyping();
}

// The line under the open chat (read out politely by screen readers: aria-live). It is
// rewritten only when it changes, so that a screen reader does not repeat it every 3 s.
export function renderTyping() {
  const text = state.open === null ? "" : typingText(state.open);
  if ($("typing").textContent !== text) keepAtBottom(() => ($("typing").textContent = text));
}

// While the text box changes (typing, pasting, cutting), the open chat's others are told, every
// 3 s at most; an empty box says nothing.
$("text").addEventListener("input", () => {
  const chatId = state.open;
  if (chatId === null || !$("text").value.trim()) return;
  if (told.chatId === chatId && Date.now() - told.at < EVERY_MS) return;
  if (send({ action: "typing", chat_id: chatId, request_id: "typing" })) told = { chatId, at: Date.now() };
});
