// The socket, one per tab. When it drops, the banner says so and counts down to the next try
// (a jittered back-off capped at 10 s), with a button to try at once.
import { $, api, state } from "./common.js";

const MAX_DELAY_MS = 10_000;

let ws = null;
let retries = 0; // failed tries since the last good connection
let timer = null; // the next try
let ticker = null; // the countdown on the banner
let deadline = 0; // when the next try starts
let hooks = {};

// hooks: onFrame(frame, replayed), onOnline(online), onRefused() (the token is no longer
// accepted). `replayed`: the frame is one a resume brings again, missed while the socket was away.
export function connect(callbacks) {
  hooks = callbacks;
  open();
}

export function send(command) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(command));
  return true;
}

export function isOnline() {
  return Boolean(ws && ws.readyState === WebSocket.OPEN);
}

function open() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // With the cursor of the last frame taken in, the server says what was missed since.
  const since = state.cursor ? `&since=${encodeURIComponent(state.cursor)}` : "";
  const token = encodeURIComponent(state.token);
  const socket = new WebSocket(`${scheme}://${location.host}/connect?access_token=${token}${since}`);
  ws = socket;
  let owed = 0; // the missed frames still to come, right after a resumed unread frame
  let welcomed = false; // its unread frame came
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    let replayed = false;
    if (frame.action === "unread_messages") {
      // Only a socket that got this far counts as connected: a server that accepts and then
      // closes at once (its database is down) keeps backing off.
      retries = 0;
      welcomed = true;
      banner(null);
      hooks.onOnline(true);
      owed = frame.resumed ? frame.missed || 0 : 0;
    } else if (owed > 0) {
      owed -= 1;
      replayed = true;
    }
    hooks.onFrame(frame, replayed);
  };
  socket.onclose = async () => {
    if (ws !== socket) return;
    ws = null;
    hooks.onOnline(false);
    if (!welcomed) {
      // Refused before its unread frame: the server or its database is away, or the token is
      // no longer accepted, which a browser's socket cannot tell apart. HTTP can: a 401 means
      // logging in again, not trying forever.
      try {
        await api("/users_list");
      } catch (error) {
        if (error.status === 401) return hooks.onRefused();
      }
    }
    schedule();
  };
}

function schedule() {
  const ceiling = Math.min(MAX_DELAY_MS, 1000 * 2 ** retries);
  retries += 1;
  // Anywhere from half the ceiling to all of it, so that the tabs a restart dropped do not
  // all come back in the same instant.
  const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
  deadline = Date.now() + delay;
  timer = setTimeout(retry, delay);
  countDown();
  ticker = setInterval(countDown, 250);
}

function countDown() {
  const seconds = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
  banner(`Disconnected. Reconnecting in ${seconds} s.`, true);
}

function retry() {
  clearTimeout(timer);
  clearInterval(ticker);
  timer = null;
  banner("Reconnecting…");
  // Straight to the socket: after a restart every tab comes back at once, and a request
  // before each socket (the whole people list, say) was a third of the server's work then.
  open();
}

// Try now rather than at the end of the countdown (the button, or the browser coming back online).
export function reconnectNow() {
  if (timer !== null) retry(); // else connected, or a try is already under way
}
$("reconnect").addEventListener("click", reconnectNow);
window.addEventListener("online", reconnectNow);
// A hidden tab's timers may be held back for a minute; coming back to it should not wait.
document.addEventListener("visibilitychange", () => document.hidden || reconnectNow());

function banner(text, offerButton = false) {
  $("status").hidden = !text;
  $("status-text").textContent = text || "";
  $("reconnect").hidden = !offerButton;
}
