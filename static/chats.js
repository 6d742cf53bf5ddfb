// The chat list, unread counts, and what tells you of new messages from another tab: the
// count in the title, the favicon, and desktop notifications once you allow them.
import { $, api, chatTitle, el, nameOf, shortWhen, state } from "./common.js";
import { openChat, renderEmptyPane } from "./pane.js";
import { typingText } from "./typing.js";

export async function loadChats() {
  const { chats } = await api("/chats");
  state.chats = new Map(chats.map((chat) => [chat.id, chat]));
  for (const chat of chats) chat.members.forEach((m) => state.names.set(m.user_uuid, m.name));
  renderChats();
}

export function noteUnread(message) {
  if (!state.unread.has(message.chat_id)) state.unread.set(message.chat_id, new Set());
  state.unread.get(message.chat_id).add(message.id);
}

function unreadIn(chatId) {
  return (state.unread.get(chatId) || new Set()).size;
}

export function renderChats() {
  const activity = (chat) => (chat.last_message ? chat.last_message.id : 0);
  const chats = [...state.chats.values()].sort((a, b) => activity(b) - activity(a) || b.id - a.id);
  // Redrawing the list must not take the keyboard focus away from the chat that had it.
  const focused = document.activeElement?.closest("#chat-list li");
  $("chat-list").replaceChildren(...chats.map(chatItem));
  if (focused) $("chat-list").querySelector(`li[data-id="${focused.dataset.id}"] button`)?.focus();
  $("no-chats").hidden = chats.length > 0;
  renderUnreadTotal();
  renderEmptyPane();
}

function chatItem(chat) {
  const item = el("li");
  item.dataset.id = chat.id;
  const other = chat.type === "private" && chat.members.find((m) => m.user_uuid !== state.me);
  item.classList.toggle("online", Boolean(other && state.online.has(other.user_uuid)));
  // A button, so that Tab reaches every chat and Enter or Space opens it.
  const button = el("button", "chat");
  button.type = "button";
  if (chat.id === state.open) button.setAttribute("aria-current", "true");
  const top = el("span", "top");
  top.append(el("strong", "title", chatTitle(chat)));
  if (other && state.online.has(other.user_uuid)) top.append(el("span", "sr-only", " (online)"));
  const last = chat.last_message;
  if (last) top.append(el("time", "when", shortWhen(new Date(last.timestamp))));
  const preview = last ? `${last.sender_uuid === state.me ? "You: " : ""}${last.text}` : "No messages yet";
  const typing = typingText(chat.id); // while someone types, it says so instead
  const bottom = el("span", "bottom");
  bottom.append(el("span", typing ? "preview typing" : "preview", typing || preview));
  const unread = unreadIn(chat.id);
  if (unread) {
    const badge = el("span", "badge", String(unread));
    badge.setAttribute("aria-hidden", "true"); // read out as the words that follow instead
    bottom.append(badge, el("span", "sr-only", `, ${unread} unread`));
  }
  button.append(top, bottom);
  button.addEventListener("click", () => openChat(chat.id));
  item.append(button);
  return item;
}

// A word about a chat that left your list ("You left “Launch”."), above it until you dismiss
// it or open a chat; no text clears it.
export function showNotice(text) {
  $("notice-text").textContent = text || "";
}
$("notice-close").addEventListener("click", () => showNotice(""));

// Everything unread, in the tab's title ("(3) chat") and its icon.
function renderUnreadTotal() {
  let total = 0;
  for (const ids of state.unread.values()) total += ids.size;
  document.title = total ? `(${total}) chat` : "chat";
  $("favicon").href = total ? "/static/favicon-unread.svg" : "/static/favicon.svg";
}

// --- Desktop notifications -------------------------------------------------------------------
// Asked for only from the button: a prompt on load is one people learn to refuse.

const canNotify = "Notification" in window;

export function renderNotifyButton() {
  $("notify").hidden = !canNotify || Notification.permission !== "default";
}

$("notify").addEventListener("click", async () => {
  await Notification.requestPermission();
  renderNotifyButton();
});

// A message from someone else, while you are looking at another tab or another window.
export function notify(message) {
  if (!canNotify || Notification.permission !== "granted") return;
  if (!document.hidden && document.hasFocus()) return;
  const chat = state.chats.get(message.chat_id);
  if (!chat) return;
  const body = chat.type === "group" ? `${nameOf(message.sender_uuid)}: ${message.text}` : message.text;
  const notification = new Notification(chatTitle(chat), { body, tag: `chat-${chat.id}`, icon: "/static/favicon.svg" });
  notification.onclick = () => {
    window.focus();
    openChat(chat.id);
    notification.close();
  };
}
