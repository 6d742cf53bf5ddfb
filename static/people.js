// The people picker under "New chat": fetched again whenever it opens (people sign up all
// day), and saying why when it is empty or when "Start chat" cannot start anything. Its list
// (fillPicker) is also the one "Add people" shows in a group's members.
import { $, api, el, setProblem, state } from "./common.js";
import { send } from "./connection.js";

let listed = new Set(); // the uuids in the picker

export async function refreshPeople() {
  const { users } = await api("/users_list");
  users.forEach((user) => state.names.set(user.user_uuid, user.name));
  state.online = new Set(users.filter((user) => user.online).map((user) => user.user_uuid));
  state.people = users;
  renderPeople(users);
  return users;
}

export function isListed(uuid) {
  return listed.has(uuid);
}

// The uuids ticked in a list of people.
export function picked(list = $("people")) {
  return [...list.querySelectorAll("input:checked")].map((box) => box.value);
}

// A list of people to tick, one checkbox each: the "New chat" picker, and "Add people" in a
// group's members. A redraw keeps what was ticked, and the keyboard's place.
export function fillPicker(list, users) {
  const ticked = new Set(picked(list));
  const focused = list.contains(document.activeElement) && document.activeElement.value;
  list.replaceChildren(
    ...users.map((user) => {
      const item = el("li");
      const label = el("label");
      const box = el("input");
      box.type = "checkbox";
      box.value = user.user_uuid;
      box.checked = ticked.has(user.user_uuid);
      label.append(box, el("span", "", user.name));
      item.append(label);
      return item;
    }),
  );
  if (focused) list.querySelector(`input[value="${focused}"]`)?.focus();
  renderPresence();
}

function renderPeople(users) {
  listed = new Set(users.map((user) => user.user_uuid));
  fillPicker($("people"), users);
  const alone = users.length === 0;
  $("people-empty").hidden = !alone;
  $("people-empty").textContent =
    `Nobody else has signed up yet. Send your team this page's address, ${location.origin}, ` +
    "and they will show up here once they have signed up.";
  $("group-name").hidden = alone;
  $("start-chat").hidden = alone;
}

// A dot after the name of whoever is online, without redrawing the list.
export function renderPresence() {
  for (const box of document.querySelectorAll(".picker input")) {
    box.closest("li").classList.toggle("online", state.online.has(box.value));
  }
}

function clearProblems() {
  setProblem("group-name", null);
  setProblem("start-chat", null);
}

$("new-chat").addEventListener("toggle", () => {
  if (!$("new-chat").open) return;
  clearProblems();
  refreshPeople().catch(() => {}); // offline: the list as it was; the banner says why
});

$("start-chat").addEventListener("click", () => {
  clearProblems();
  const people = picked();
  const name = $("group-name").value.trim();
  if (!people.length) {
    setProblem("start-chat", "Tick the person (or people) you want to chat with first.");
    return;
  }
  const group = people.length > 1 || name;
  if (group && !name) {
    setProblem("group-name", "A chat with two or more people is a group: give it a name.");
    $("group-name").focus();
    return;
  }
  const command = { action: "create_chat", type: group ? "group" : "private", user_ids: people };
  if (group) command.name = name;
  if (!send({ ...command, request_id: "new-chat" })) {
    setProblem("start-chat", "You are offline. Try again once you are reconnected.");
  }
});

// The server made the chat you asked for: the picker is done.
export function chatStarted() {
  $("people").querySelectorAll("input:checked").forEach((box) => (box.checked = false));
  $("group-name").value = "";
  $("new-chat").open = false;
}

// The server refused it: say why, next to the part that was wrong.
export function chatRefused({ detail }) {
  if (detail.startsWith("name")) setProblem("group-name", "Use a group name of plain visible characters.");
  else setProblem("start-chat", `The chat could not be started: ${detail}.`);
}

// From the empty states: open the picker and put the keyboard in it.
export function openPicker() {
  $("new-chat").open = true;
  $("new-chat").querySelector("summary").focus();
}
