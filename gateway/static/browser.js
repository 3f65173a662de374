// Which browser this is, as far as the page's help goes, and what the page
// needs that a browser may lack. Pure: the user agent and the global object
// are passed in.
//
// Tested here: Chromium 156, Firefox ESR 153 and WebKitGTK 2.50 (Safari's
// engine); every browser on iPhone and iPad is Safari's engine too.

/** "chrome" (Chrome, Edge, Chromium, Opera…), "firefox", "safari" (Mac), "ios" or "other". */
export function browserFamily(userAgent, maxTouchPoints = 0) {
  const ua = String(userAgent || "");
  // iPadOS reports itself as a Mac; only its touch screen gives it away.
  if (/iPhone|iPad|iPod/.test(ua) || (/Macintosh/.test(ua) && maxTouchPoints > 1)) return "ios";
  if (/Firefox\/|FxiOS/.test(ua)) return "firefox";
  if (/Chrome\/|Chromium\/|Edg\//.test(ua)) return "chrome";
  if (/AppleWebKit\//.test(ua) && /Safari\//.test(ua)) return "safari";
  return "other";
}

/** How to allow the microphone again, in this browser's own words: {intro, steps, hint}. */
export const MIC_STEPS = {
  chrome: {
    intro: "To allow it in Chrome, Edge or Chromium:",
    steps: [
      "Click the icon at the left of the address bar (a padlock or two sliders).",
      "Set Microphone to Allow.",
      "Press Try the microphone again (or reload the page).",
    ],
    hint: "On an Android phone: the browser's menu, then Settings, Site settings, Microphone.",
  },
  firefox: {
    intro: "To allow it in Firefox:",
    steps: [
      "Click the crossed-out microphone (or the padlock) at the left of the address bar.",
      "Beside Use the microphone, click the × to clear Blocked (or Blocked temporarily).",
      "Press Try the microphone again and choose Allow when Firefox asks.",
    ],
    hint: "Firefox forgets a temporary block when you reload the page.",
  },
  safari: {
    intro: "To allow it in Safari:",
    steps: [
      "In the menu bar choose Safari, then Settings for This Website (or Settings…, Websites, Microphone).",
      "Set Microphone to Allow for this site.",
      "Press Try the microphone again (or reload the page).",
    ],
    hint: "If the Mac asked about the microphone before: System Settings, Privacy & Security, Microphone, turn Safari on.",
  },
  ios: {
    intro: "To allow it on an iPhone or iPad:",
    steps: [
      "Tap aA (or the page icon) in the address bar, then Website Settings.",
      "Set Microphone to Allow.",
      "Press Try the microphone again (or reload the page).",
    ],
    hint: "In Chrome or Firefox on an iPhone: the Settings app, then Chrome (or Firefox), turn Microphone on.",
  },
  other: {
    intro: "To allow it:",
    steps: [
      "Open this site's settings (usually the icon at the left of the address bar).",
      "Set Microphone to Allow.",
      "Press Try the microphone again (or reload the page).",
    ],
    hint: "If your browser has no such setting, try a recent Chrome, Edge, Firefox or Safari.",
  },
};

/**
 * What this browser lacks to take part: {listen: [...], sing: [...]} (plain
 * words, empty when all is there). Without the `listen` features the page
 * cannot work at all; without the `sing` ones it can only listen.
 */
export function missingFeatures(g) {
  const listen = [];
  const sing = [];
  if (typeof g.WebSocket === "undefined") listen.push("WebSockets");
  if (typeof g.AudioContext === "undefined") listen.push("the Web Audio API");
  else if (typeof g.AudioWorkletNode === "undefined") listen.push("audio worklets");
  if (!g.isSecureContext) sing.push("a secure connection (an https:// address) for the microphone");
  else if (!g.navigator || !g.navigator.mediaDevices || typeof g.navigator.mediaDevices.getUserMedia !== "function") {
    sing.push("access to a microphone");
  }
  return { listen, sing };
}

/** The message for a browser that cannot take part, or null. */
export function unsupportedText({ listen, sing }) {
  if (listen.length) {
    return `This browser cannot take part: it lacks ${listen.join(" and ")}. Use a recent Chrome, Edge, Firefox or Safari (on iPhone and iPad, iOS 16 or newer).`;
  }
  if (sing.length) return `You can listen, but not sing here: this page has no ${sing.join(" and ")}.`;
  return null;
}
