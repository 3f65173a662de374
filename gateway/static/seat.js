// What the page remembers between loads.
//
// - The seat (this tab's place in a room: room, name, role, password and the
//   resume token {singer, token} from `welcome`) lives in sessionStorage: a
//   reload, or reopening the closed tab, rejoins the same seat within the
//   server's reconnect grace, and another tab never steals it.
// - The person (name and role) lives in localStorage, so a room link opened
//   later has the name filled in.

const SEAT_KEY = "bb.seat";
const PERSON_KEY = "bb.person";

function read(storage, key) {
  try {
    const value = JSON.parse(storage.getItem(key));
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

function write(storage, key, value) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage can be full or disabled (private modes): the page still works, it only forgets.
  }
}

/** The seat of this tab, or null: {room, name, role, password, singer, token}. */
export function loadSeat() {
  const seat = read(sessionStorage, SEAT_KEY);
  return seat && typeof seat.room === "string" && typeof seat.name === "string" ? seat : null;
}

export function saveSeat(seat) {
  write(sessionStorage, SEAT_KEY, seat);
}

export function clearSeat() {
  write(sessionStorage, SEAT_KEY, null);
}

/** {name, role} from an earlier visit, or null. */
export function loadPerson() {
  return read(localStorage, PERSON_KEY);
}

export function savePerson({ name, role }) {
  write(localStorage, PERSON_KEY, { name, role });
}

/** The room named by this page's address: /r/<room>, else ?room=, else null. */
export function roomFromLocation(loc = location) {
  const match = /^\/r\/([^/]+)\/?$/.exec(loc.pathname);
  if (match) return decodeURIComponent(match[1]);
  return new URLSearchParams(loc.search).get("room");
}

/** The link to send a choir: https://host/r/<room>. */
export function roomLink(room, loc = location) {
  return `${loc.origin}/r/${encodeURIComponent(room)}`;
}

/** A room's listen-only link: it joins as a listener at once (no form, no microphone). */
export function listenLink(room, loc = location) {
  return `${roomLink(room, loc)}?listen=1`;
}
