// Skywatch resume: what the page remembers so that a reconnect, to this VM
// or any other, catches up (docs/protocol.md, "Resuming"). app.js calls it;
// it owns no connection and no DOM except what it is handed.
//
// It keeps, in localStorage (so a reload or a reopened tab catches up too):
// the newest sent_at shown, the recent alert ids (to drop the repeats a
// replay brings), and the last alerts shown (to show them again on reload).
"use strict";

window.SkywatchResume = (() => {
  const KEY = "skywatch.resume.v1";
  const MAX_IDS = 1000;             // the relay's history holds 1,000 alerts by default
  const MAX_KEPT = 100;             // alerts shown again after a reload (app.js shows 100)
  const FIRST_LOOK = 5 * 60 * 1000; // a first visit asks for the last 5 minutes

  const state = load();
  const ids = new Set(state.ids);
  // Nothing stored: a first visit. Ask for the recent alerts, and make no
  // claim about completeness for that window (the page never had it).
  const firstSince = state.since ? "" : new Date(Date.now() - FIRST_LOOK).toISOString();
  let asked = "";      // the since the current connection asked for
  let live = false;    // a connection got past its resumed frame: a later gap is a real one
  let saveTimer = 0;

  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(KEY) || "null");
      if (s && typeof s === "object") {
        return {
          since: typeof s.since === "string" ? s.since : "",
          ids: Array.isArray(s.ids) ? s.ids.filter((x) => typeof x === "string").slice(-MAX_IDS) : [],
          alerts: Array.isArray(s.alerts) ? s.alerts.filter((a) => a && typeof a.id === "string").slice(-MAX_KEPT) : [],
        };
      }
    } catch { /* unreadable: start afresh */ }
    return { since: "", ids: [], alerts: [] };
  }

  // Saved at most twice a second, and when the tab is hidden or closed.
  function save() {
    if (saveTimer) return;
    saveTimer = setTimeout(saveNow, 500);
  }
  function saveNow() {
    clearTimeout(saveTimer);
    saveTimer = 0;
    try {
      localStorage.setItem(KEY, JSON.stringify(state));
    } catch { /* private mode or full: resume within this page load only */ }
  }
  addEventListener("pagehide", saveNow);

  // withSince returns the WebSocket URL with ?since=: the newest sent_at
  // shown, or on a first visit a few minutes back.
  function withSince(url) {
    asked = state.since || firstSince;
    const u = new URL(url);
    u.searchParams.set("since", asked);
    return u.toString();
  }

  // accept records an alert about to be shown; false means a repeat (the
  // replay starts a few seconds before since, and a reload brings back what
  // was shown) and it must not be shown again.
  function accept(a) {
    if (!a || !a.id || ids.has(a.id)) return false;
    ids.add(a.id);
    state.ids.push(a.id);
    if (state.ids.length > MAX_IDS) ids.delete(state.ids.shift());
    // sent_at is fixed-width UTC from the relays: text order is time order.
    if (typeof a.sent_at === "string" && a.sent_at > state.since) state.since = a.sent_at;
    state.alerts.push({ id: a.id, text: a.text, origin: a.origin, sent_at: a.sent_at });
    if (state.alerts.length > MAX_KEPT) {
      state.alerts.sort((x, y) => (x.sent_at < y.sent_at ? -1 : x.sent_at > y.sent_at ? 1 : 0));
      state.alerts.splice(0, state.alerts.length - MAX_KEPT);
    }
    save();
    return true;
  }

  // restore returns the alerts shown before a reload, oldest first, for the
  // page to show again without asking accept.
  function restore() {
    return state.alerts.slice().sort((x, y) => (x.sent_at < y.sent_at ? -1 : x.sent_at > y.sent_at ? 1 : 0));
  }

  const clock = (iso) => {
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  };

  // onResumed reads the resumed frame and returns the text to show when the
  // relay cannot vouch that nothing is missing, or null.
  function onResumed(frame) {
    const first = !live && asked === firstSince;
    live = true;
    if (frame.recovered || first) return null;
    return "Alerts between " + clock(asked) + " and " + clock(frame.from) + " may be missing.";
  }

  // onVisible calls fn when a hidden tab becomes visible again (browsers
  // slow down the timers of hidden tabs, so a reconnect may be waiting).
  function onVisible(fn) {
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") fn();
      else saveNow();
    });
  }

  return { withSince, accept, restore, onResumed, onVisible };
})();
