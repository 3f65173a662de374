// Browsers give a page the microphone (and the audio worklet and WebCodecs the
// page needs) only in a secure context: an https:// page, or http://localhost on
// the machine itself. A phone that opens http://192.168.1.20:8080 gets none of
// them, and no error says why. Say why, and what to open instead.

// brigade up serves plain HTTP on 8080; `brigade up --https` serves HTTPS on 8443.
const HTTPS_PORT_FOR = { "": "", "80": "", "8080": "8443" };

/** The https:// address to suggest for a page opened at `href` (same host and path). */
export function httpsAddress(href) {
  const url = new URL(href);
  url.protocol = "https:";
  const port = new URL(href).port;
  url.port = port in HTTPS_PORT_FOR ? HTTPS_PORT_FOR[port] : port;
  return url.href;
}

/** Whether this page can have a microphone at all (null), or why not. */
export function secureContextProblem(win = window) {
  if (win.isSecureContext && win.navigator.mediaDevices) return null;
  if (!win.isSecureContext) return "insecure";
  return "no-media-devices";
}

/** Put the explanation at the top of the join form; returns the card, or null if all is well. */
export function showSecureContextHelp(doc = document, win = window) {
  const problem = secureContextProblem(win);
  if (problem === null) return null;
  const card = doc.createElement("section");
  card.id = "secure-context-help";
  card.className = "card help";
  card.setAttribute("role", "alert");
  card.setAttribute("aria-labelledby", "secure-context-title");
  const title = doc.createElement("h2");
  title.id = "secure-context-title";
  title.textContent = "This address gets no microphone";
  const why = doc.createElement("p");
  why.textContent = problem === "insecure"
    ? `Browsers let a page use the microphone only over https:// (or on the computer running ` +
      `Bucket Brigade itself, as http://localhost). This page was opened as ${win.location.origin}, ` +
      `plain http:// from another machine, so you cannot sing (or hear the room) here.`
    : "This browser offers this page no microphone at all (navigator.mediaDevices is missing): " +
      "try another browser, or open the page over https://.";
  const what = doc.createElement("p");
  const link = doc.createElement("a");
  link.href = httpsAddress(win.location.href);
  link.textContent = link.href;
  link.id = "secure-context-link";
  what.append("Open ", link, " instead. The first time, the browser may warn about the " +
    "certificate: accept it for this address (the person running Bucket Brigade can tell you " +
    "its fingerprint).");
  const hint = doc.createElement("p");
  hint.className = "hint";
  const code = (text) => {
    const el = doc.createElement("code");
    el.textContent = text;
    return el;
  };
  hint.append("If that address does not answer: whoever runs Bucket Brigade starts it with HTTPS, ",
    code("make run HTTPS=1"), " or ", code("brigade up --https"), ", which prints the address to open.");
  if (problem === "insecure") card.append(title, why, what, hint);
  else card.append(title, why);
  const setup = doc.getElementById("setup");
  if (setup) setup.prepend(card);
  else doc.body.prepend(card);
  return card;
}
