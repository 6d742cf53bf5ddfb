// A group's members, from the button in the open chat's header: who is in it (its owner and
// who is online marked), "Add people" from the same picker as "New chat", and for the owner
// Rename and Remove; anyone may leave. What would be hard to undo asks first, in the panel:
// a dialog box would take the page away from you. Private chats have no panel: their title
// already names the other person, and their two members never change.
import { $, button, chatTitle, el, setProblem, state } from "./common.js";
import { send } from "./connection.js";
import { fillPicker, picked, refreshPeople } from "./people.js";

const OFFLINE = "You are offline. Try again once you are reconnected.";
let removing = null; // the uuid whose Remove asks "Remove NAME?"

// The open chat, if it is a group.
function openGroup() {
  const chat = state.chats.get(state.open);
  return chat?.type === "group" ? chat : null;
}

function isOwner(chat) {
  return chat.owner === state.me;
}

// Another chat opened (or none): the panel closes, and the header's button is for this one.
export function resetMembers() {
  closePanel(false);
  renderMembers();
}

// The header's button, and the panel if it is open: called again whenever the group changes
// (chat_updated) or someone comes online or goes.
export function renderMembers() {
  const chat = openGroup();
  $("members-button").hidden = !chat;
  if (!chat) return closePanel(false);
  const count = chat.members.length;
  $("members-button").textContent = `${count} ${count === 1 ? "member" : "members"}`;
  if ($("members").hidden) return;
  $("members-title").textContent = `Members of “${chatTitle(chat)}”`;
  const mayRename = isOwner(chat);
  if (mayRename && $("rename-form").hidden) $("group-rename").value = chat.name; // just became owner
  $("rename-form").hidden = !mayRename;
  renderList(chat);
  renderAddable(chat);
}

function renderList(chat) {
  if (!chat.members.some((m) => m.user_uuid === removing)) removing = null; // gone meanwhile
  const list = $("member-list");
  const focused = list.contains(document.activeElement) && document.activeElement;
  const place = focused && [focused.closest("li").dataset.uuid, focused.dataset.act];
  // The owner first, then by name.
  const owns = (m) => (m.user_uuid === chat.owner ? 0 : 1);
  const members = [...chat.members].sort((a, b) => owns(a) - owns(b) || nameIn(a).localeCompare(nameIn(b)));
  list.replaceChildren(...members.map((member) => memberItem(member, chat)));
  if (place) list.querySelector(`li[data-uuid="${place[0]}"] [data-act="${place[1]}"]`)?.focus();
}

function nameIn(member) {
  return member.user_uuid === state.me ? state.name || member.name || "You" : member.name || "Someone";
}

function memberItem(member, chat) {
  const item = el("li");
  item.dataset.uuid = member.user_uuid;
  const me = member.user_uuid === state.me;
  const online = !me && state.online.has(member.user_uuid);
  item.classList.toggle("online", online);
  const who = el("span", "name", nameIn(member));
  if (me) who.append(el("span", "you", " (you)"));
  if (online) who.append(el("span", "sr-only", " (online)"));
  item.append(who);
  if (member.user_uuid === chat.owner) item.append(el("span", "tag", "owner"));
  if (removing === member.user_uuid) {
    const ask = el("span", "confirm");
    ask.setAttribute("role", "group");
    ask.append(
      el("span", "question", `Remove ${nameIn(member)} from the group?`),
      button("Remove", "danger", "remove-yes"),
      button("Cancel", "secondary", "remove-no"),
    );
    item.append(ask);
  } else if (isOwner(chat) && !me) {
    const remove = button("Remove", "secondary", "remove");
    remove.setAttribute("aria-label", `Remove ${nameIn(member)}`);
    item.append(remove);
  }
  return item;
}

// "Add people": everyone else who has signed up and is not in the group yet.
function renderAddable(chat) {
  const members = new Set(chat.members.map((m) => m.user_uuid));
  const others = state.people.filter((user) => !members.has(user.user_uuid));
  fillPicker($("add-people"), others);
  $("add-empty").textContent = "Everyone who has signed up is in this group already.";
  $("add-empty").hidden = others.length > 0;
  $("add").hidden = !others.length;
}

// --- Opening and closing -------------------------------------------------------------------

function openPanel() {
  const chat = openGroup();
  if (!chat) return;
  removing = null;
  ["group-rename", "member-list", "add", "leave"].forEach((id) => setProblem(id, null));
  $("group-rename").value = chat.name;
  $("add-members").open = false;
  hideLeaveQuestion();
  $("members").hidden = false;
  $("members-button").setAttribute("aria-expanded", "true");
  renderMembers();
  $("members-title").focus();
  refreshPeople() // who is online now, and who has signed up since
    .then(renderMembers)
    .catch(() => {});
}

function closePanel(refocus) {
  removing = null;
  $("members-button").setAttribute("aria-expanded", "false");
  if ($("members").hidden) return;
  $("members").hidden = true;
  if (refocus) $("members-button").focus();
}

$("members-button").addEventListener("click", () => ($("members").hidden ? openPanel() : closePanel(true)));
$("members-close").addEventListener("click", () => closePanel(true));

// Esc takes back a question first, then closes the panel.
$("members").addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  event.preventDefault();
  if (removing) cancelRemove(true);
  else if (!$("leave-confirm").hidden) {
    hideLeaveQuestion();
    $("leave").focus();
  } else closePanel(true);
});

// --- Rename (the owner) ---------------------------------------------------------------------

$("rename-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setProblem("group-rename", null);
  const chat = openGroup();
  const name = $("group-rename").value.trim();
  if (!name) return setProblem("group-rename", "Give the group a name.");
  if (/[\p{Cc}\p{Cf}]/u.test(name)) {
    return setProblem("group-rename", "Leave out invisible characters (such as zero-width spaces).");
  }
  if (name === chat.name) return; // nothing to change
  if (!send({ action: "rename_chat", chat_id: chat.id, name, request_id: `rename:${chat.id}` })) {
    setProblem("group-rename", OFFLINE);
  }
});

// --- Remove (the owner) ----------------------------------------------------------------------

$("member-list").addEventListener("click", (event) => {
  const act = event.target.closest("[data-act]")?.dataset.act;
  const uuid = event.target.closest("li")?.dataset.uuid;
  if (act === "remove") askRemove(uuid);
  else if (act === "remove-no") cancelRemove(true);
  else if (act === "remove-yes") removeMember(uuid);
});

function askRemove(uuid) {
  setProblem("member-list", null);
  removing = uuid;
  renderMembers();
  $("member-list").querySelector(`li[data-uuid="${uuid}"] [data-act="remove-no"]`)?.focus();
}

function cancelRemove(refocus) {
  const uuid = removing;
  removing = null;
  renderMembers();
  if (refocus) $("member-list").querySelector(`li[data-uuid="${uuid}"] [data-act="remove"]`)?.focus();
}

function removeMember(uuid) {
  const chat = openGroup();
  removing = null;
  renderMembers();
  $("members-title").focus(); // their line goes once the server has removed them
  if (!send({ action: "remove_member", chat_id: chat.id, user_id: uuid, request_id: `remove:${chat.id}` })) {
    setProblem("member-list", OFFLINE);
  }
}

// --- Add people (anyone in the group) ---------------------------------------------------------

$("add-members").addEventListener("toggle", () => {
  if (!$("add-members").open) return;
  setProblem("add", null);
  renderMembers();
  refreshPeople() // people sign up all day
    .then(renderMembers)
    .catch(() => {});
});

$("add-people").addEventListener("change", () => setProblem("add", null)); // what it said is done

$("add").addEventListener("click", () => {
  setProblem("add", null);
  const chat = openGroup();
  const people = picked($("add-people"));
  if (!people.length) return setProblem("add", "Tick the people you want to add first.");
  if (!send({ action: "add_members", chat_id: chat.id, user_ids: people, request_id: `add:${chat.id}` })) {
    setProblem("add", OFFLINE);
  }
});

// --- Leave (anyone in the group) -------------------------------------------------------------

$("leave").addEventListener("click", () => {
  const chat = openGroup();
  setProblem("leave", null);
  const handOver = isOwner(chat) && chat.members.length > 1 ? " Whoever has been in it longest will own it." : "";
  $("leave-question").textContent = `Leave “${chatTitle(chat)}”? You will no longer see its messages.${handOver}`;
  $("leave").hidden = true;
  $("leave-confirm").hidden = false;
  $("leave-no").focus(); // Enter twice must not leave
});

$("leave-no").addEventListener("click", () => {
  hideLeaveQuestion();
  $("leave").focus();
});

$("leave-yes").addEventListener("click", () => {
  const chat = openGroup();
  hideLeaveQuestion();
  $("leave").focus();
  // The reply is chat_removed: app.js takes the group off the list and closes it.
  if (!send({ action: "leave_chat", chat_id: chat.id, request_id: `leave:${chat.id}` })) setProblem("leave", OFFLINE);
});

function hideLeaveQuestion() {
  $("leave-confirm").hidden = true;
  $("leave").hidden = false;
}

// --- What the server said ----------------------------------------------------------------------

// It did what this panel asked (a chat_updated carrying the request's id).
export function membersAnswered(requestId) {
  const [kind, id] = String(requestId).split(":");
  const chat = openGroup();
  if (!chat || Number(id) !== chat.id) return;
  if (kind === "add") {
    $("add-people")
      .querySelectorAll("input:checked")
      .forEach((box) => (box.checked = false));
    $("add-members").open = false;
    $("add-members").querySelector("summary").focus();
  } else if (kind === "rename") {
    $("group-rename").value = chat.name;
  }
}

const FIELDS = { add: "add", remove: "member-list", rename: "group-rename", leave: "leave" };
const WHY = {
  "add:forbidden": "You are no longer in this group.",
  "add:not_found": "Someone you ticked no longer has an account.",
  "remove:forbidden": "Only the group's owner can remove people.",
  "remove:not_found": "They are not in this group any more.",
  "rename:forbidden": "Only the group's owner can rename it.",
  "rename:invalid_request": "Use a group name of 1 to 100 plain visible characters.",
  "leave:forbidden": "You are no longer in this group.",
};

// It refused: say why, next to what asked. False if the refusal was not this panel's.
export function membersRefused({ request_id: requestId, error, detail }) {
  const [kind, id] = String(requestId).split(":");
  if (!FIELDS[kind]) return false;
  if (openGroup()?.id !== Number(id)) return true; // about a chat you have left the panel of
  let why = WHY[`${kind}:${error}`] || `It could not be done: ${detail}.`;
  if (error === "rate_limited") why = "Too fast: wait a moment, then try again.";
  setProblem(FIELDS[kind], why);
  return true;
}
