// The message line under the top bar. Errors stay until dismissed or
// replaced (a person may be looking away); other news fades after a while.

const NOTICE_MS = 8000;

export class Notice {
  constructor(el, textEl, closeButton) {
    this.el = el;
    this.textEl = textEl;
    this.timer = null;
    closeButton.addEventListener("click", () => this.hide());
  }

  show(text, kind = "info") {
    this.textEl.textContent = text;
    this.el.className = kind === "error" ? "notice error" : "notice";
    this.el.hidden = false;
    clearTimeout(this.timer);
    if (kind !== "error") this.timer = setTimeout(() => this.hide(), NOTICE_MS);
  }

  hide() {
    clearTimeout(this.timer);
    this.el.hidden = true;
  }
}
