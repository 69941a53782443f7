// Skywatch page: one WebSocket to a relay (protocol v1, docs/protocol.md),
// reconnecting with backoff.
//
// Where it connects: this page's own origin first. Other relays come only
// from the server: a relay may list fallbacks in its hello (make dev and the
// e2e suite, where "VMs" are ports on one host; on Fly the own origin alone
// reaches another VM through the anycast proxy). Never from the URL: a
// crafted link must not move anyone to somebody else's relay, and the
// content security policy would refuse it anyway.
//
// Shape: a model of what the page knows (connection, readiness, pending
// send), one render for the status and the button, a handler per frame type,
// and one function that puts an alert in the list.
"use strict";

(() => {
  const MAX_SHOWN = 100;
  const MIN_BACKOFF = 250, MAX_BACKOFF = 5000;
  const FRESH_MS = 4000;      // how long a new alert stands out
  const STABLE_MS = 10000;    // a connection that lived this long resets the backoff
  const TITLE = document.title;

  const $ = (id) => document.getElementById(id);
  const statusEl = $("status"), vmEl = $("vm"), form = $("form"), input = $("text"),
    send = $("send"), notice = $("notice"), list = $("alerts"), empty = $("empty"),
    notifyBtn = $("notify"), soundBtn = $("sound");
  // resume.js: since, repeats across reconnects and reloads, gaps.
  const R = window.SkywatchResume, gap = $("gap");

  const own = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const candidates = [own];   // own origin, then relays named in hellos
  // BROWSER_PUBLISH=signed: a page opened with ?token=... (minted by the
  // site's backend, or `skywatch token`) passes it to every relay it tries.
  // It is the only thing the page takes from its URL.
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (u) => token ? u + (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : u;

  // model is everything the status line and the button are drawn from.
  const model = {
    conn: "connecting",   // connecting | open | reconnecting | closed
    ready: true,          // from the relay's status frames; true until told otherwise
    reason: "",           // why the last connection ended, in words
    vm: "", region: "",
    pending: null,        // {nonce, text} of the alert waiting for its answer
    everOpen: false,
  };

  // ---- status and button ----------------------------------------------

  function state() {
    return model.conn === "open" ? (model.ready ? "open" : "degraded") : model.conn;
  }

  // setText changes an element's text only when it differs: the status is a
  // live region, and screen readers announce every change.
  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  const words = {
    connecting: () => "Connecting…",
    open: () => "Connected",
    degraded: () => "Connected, but alerts cannot be sent or received right now",
    reconnecting: () => "Reconnecting: " + model.reason + "…",
    closed: () => "Disconnected: " + model.reason + ". Reload the page to try again.",
  };

  function render() {
    const st = state();
    statusEl.dataset.state = st;
    setText(statusEl, words[st]());
    vmEl.dataset.vm = model.conn === "open" ? model.vm : "";
    setText(vmEl, model.conn === "open" ? "Connected to VM " + model.vm + " in " + model.region : "Not connected to a VM");
    if (model.pending) {
      send.disabled = true;
      setText(send, "Sending…");
    } else if (st === "open") {
      send.disabled = false;
      setText(send, "Alert everyone");
    } else if (st === "degraded") {
      // Sending may still work (the relay publishes even when its own
      // subscription is down), so the button stays, and says what to expect.
      send.disabled = false;
      setText(send, "Alerts are not getting through right now: try anyway");
    } else {
      send.disabled = true;
      setText(send, "Not connected: waiting for the server");
    }
  }

  function say(text) { notice.textContent = text; }

  // ---- the connection ---------------------------------------------------

  let ws = null, idx = 0, failures = 0, openedAt = 0;
  let retryTimer = 0; // so a tab made visible can reconnect at once

  function connect() {
    const url = candidates[idx];
    if (model.conn !== "reconnecting") model.conn = "connecting";
    render();
    let sock;
    try {
      sock = new WebSocket(R.withSince(withToken(url))); // catch up from the newest alert shown
    } catch (e) {
      lost(null, false);
      return;
    }
    ws = sock;
    let opened = false;
    sock.onopen = () => { opened = true; };
    sock.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      const h = msg && Object.hasOwn(handlers, msg.type) ? handlers[msg.type] : null;
      if (h) h(msg);   // v1: frame types the page does not know are ignored
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      lost(ev.code, opened);
    };
  }

  // closeWords says why a connection ended, for people.
  function closeWords(code, opened) {
    switch (code) {
      case 1012: return "the server is restarting";
      case 1001: return "the server is going away";
      case 1000: return "the server closed the connection";
      case 1008: return "this page fell behind and was disconnected";
      case 1011: return "the server ran into a problem";
      case 1013: return "the server is too busy";
      case 1003: case 1009: return "the server could not accept what this page sent";
      default: return opened ? "network lost" : "cannot reach the server";
    }
  }

  function lost(code, opened) {
    const wasOpen = model.conn === "open";
    if (wasOpen && Date.now() - openedAt > STABLE_MS) failures = 0;
    // A failed attempt keeps the reason the live connection ended with: a
    // restarting server that refuses the next attempts is still restarting.
    if (wasOpen || opened || !model.everOpen) model.reason = closeWords(code, opened);
    if (model.pending) {
      say("Not confirmed: the connection dropped before the server answered. Your text is still here; " +
        "send it again if the alert does not appear.");
      model.pending = null;
    }
    if (code === 1003 || code === 1009) {
      // A page bug; reconnecting would only repeat it (docs/protocol.md).
      model.conn = "closed";
      render();
      return;
    }
    model.conn = "reconnecting";
    // Try the next candidate at once; back off, with jitter, once each has
    // failed, so a fleet restart is not met by a stampede of reconnects.
    idx = (idx + 1) % candidates.length;
    failures++;
    const over = failures - candidates.length;
    let wait = over < 0 ? 0 : Math.min(MAX_BACKOFF, MIN_BACKOFF * 2 ** over) * (0.5 + Math.random() / 2);
    // After 1012 with nowhere else to go, give the proxy a moment to route
    // to a running VM (0.5–2 s, as docs/protocol.md suggests).
    if (code === 1012 && candidates.length === 1) wait = Math.max(wait, 500 + Math.random() * 1500);
    render();
    retryTimer = setTimeout(connect, wait);
  }

  // ---- frames from the relay --------------------------------------------

  // handlers has one entry per frame type the page understands.
  const handlers = {
    hello(m) {
      openedAt = Date.now();
      if (m.limits && m.limits.text) input.maxLength = m.limits.text;
      for (const r of Array.isArray(m.relays) ? m.relays : []) {
        if (typeof r === "string" && /^wss?:\/\/[^\s/?#]+\//.test(r) && !candidates.includes(r)) candidates.push(r);
      }
      Object.assign(model, { conn: "open", ready: true, reason: "", vm: String(m.vm), region: String(m.region), everOpen: true });
      render();
    },
    // The fleet panel (issue 12) lives in fleet.js.
    fleet(m) {
      if (window.skywatchFleet) window.skywatchFleet.update(m);
    },
    // The replay after a reconnect is over: say so if something may be
    // missing.
    resumed(m) {
      const text = R.onResumed(m);
      if (text) { gap.textContent = text; gap.hidden = false; }
    },
    status(m) {
      model.ready = m.ready !== false;
      render();
    },
    alert(m) {
      if (!R.accept(m)) return; // a repeat from a replay
      if (showAlert(m, true)) noticeWhileHidden(m);
    },
    ack(m) {
      const p = model.pending;
      if (!p || m.nonce !== p.nonce) return;
      model.pending = null;
      // Cleared only now that the relay has it, and only if the user has
      // not started typing something else meanwhile.
      if (input.value === p.text) input.value = "";
      say("");
      render();
    },
    error(m) {
      const p = model.pending;
      if (p && m.nonce && m.nonce !== p.nonce) return;
      model.pending = null;
      say(errorWords(m));
      render();
    },
  };

  function errorWords(m) {
    switch (m.code) {
      case "unavailable":
        return "Not sent: the alert service cannot be reached right now. Your text is kept; try again in a moment.";
      case "rate_limited":
        return "Not sent: too many alerts at once. Your text is kept; wait a few seconds and try again.";
      case "too_large":
        return "Not sent: the text is too long (" + (m.message || "over the limit") + ").";
      default:
        return "Not sent: " + (m.message || m.code || "the server refused it") + ".";
    }
  }

  // ---- the alert list -----------------------------------------------------

  // showAlert puts an alert in the list, newest (by sent_at) on top, once per
  // id, and reports whether it was new. fresh marks it as just arrived.
  function showAlert(a, fresh) {
    if (!a || typeof a.id !== "string" || list.querySelector('li[data-id="' + CSS.escape(a.id) + '"]')) return false;
    const li = document.createElement("li");
    li.dataset.id = a.id;
    li.dataset.sentAt = a.sent_at || "";
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = a.text;
    const meta = document.createElement("p");
    meta.className = "meta";
    const origin = a.origin || {};
    const where = document.createElement("span");
    where.className = "origin";
    where.textContent = "VM " + origin.vm + " in " + origin.region;
    const when = document.createElement("time");
    when.dateTime = a.sent_at;
    const at = new Date(a.sent_at);
    when.title = isNaN(at) ? String(a.sent_at) : at.toLocaleString();
    when.textContent = ago(at);
    meta.append("From ", where, " · ", when);
    li.append(text, meta);
    if (fresh) {
      li.classList.add("fresh");
      setTimeout(() => li.classList.remove("fresh"), FRESH_MS);
    }
    let before = null;
    for (const other of list.children) {
      if ((other.dataset.sentAt || "") <= li.dataset.sentAt) { before = other; break; }
    }
    list.insertBefore(li, before);
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
    empty.hidden = true;
    return true;
  }

  // ago is a time relative to now, in words.
  function ago(at) {
    if (isNaN(at)) return "";
    const s = Math.round((Date.now() - at) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return at.toLocaleDateString();
  }

  setInterval(() => {
    for (const t of list.querySelectorAll("time")) {
      const txt = ago(new Date(t.dateTime));
      if (t.textContent !== txt) t.textContent = txt;
    }
  }, 1000);

  // ---- noticed while hidden -----------------------------------------------

  const prefs = {
    get(k) { try { return localStorage.getItem("skywatch." + k) === "on"; } catch { return false; } },
    set(k, on) { try { localStorage.setItem("skywatch." + k, on ? "on" : "off"); } catch { /* private mode */ } },
  };
  let unread = 0;
  let notify = prefs.get("notify") && "Notification" in window && Notification.permission === "granted";
  let sound = prefs.get("sound");
  let audio = null;

  function noticeWhileHidden(a) {
    if (sound) beep();
    if (!document.hidden) return;
    unread++;
    document.title = "(" + unread + ") " + TITLE;
    if (notify) {
      try {
        new Notification("Skywatch alert", { body: a.text, tag: a.id });
      } catch { /* some mobile browsers allow notifications only from a service worker */ }
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    unread = 0;
    document.title = TITLE;
  });

  function renderPrefs() {
    notifyBtn.setAttribute("aria-pressed", String(notify));
    notifyBtn.textContent = notify ? "Notifications: on" : "Notify me";
    soundBtn.setAttribute("aria-pressed", String(sound));
    soundBtn.textContent = sound ? "Sound: on" : "Sound: off";
  }

  // Permission is asked only here, after an explicit click.
  notifyBtn.addEventListener("click", async () => {
    if (notify) {
      notify = false;
    } else if (!("Notification" in window)) {
      say("This browser cannot show notifications.");
    } else {
      const p = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
      notify = p === "granted";
      if (!notify) say("Notifications are blocked for this site; allow them in the browser's site settings.");
    }
    prefs.set("notify", notify);
    renderPrefs();
  });

  soundBtn.addEventListener("click", () => {
    sound = !sound;
    prefs.set("sound", sound);
    if (sound) beep();   // a click is the gesture browsers want before audio plays
    renderPrefs();
  });

  // beep plays a short tone; no file to fetch.
  function beep() {
    try {
      audio = audio || new AudioContext();
      if (audio.state === "suspended") audio.resume();
      const osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.15, audio.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.25);
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.25);
    } catch { /* no audio: the title and the list still show it */ }
  }

  // ---- sending ------------------------------------------------------------

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!ws || ws.readyState !== WebSocket.OPEN || model.pending) return;
    const nonce = Math.random().toString(36).slice(2, 12);
    const text = input.value;
    // Empty text is fine: the relay applies the default text itself.
    ws.send(JSON.stringify({ type: "alert", text: text.trim(), nonce }));
    model.pending = { nonce, text };
    say("");
    render();
  });

  // Show what was shown before a reload; reconnect at once when a hidden
  // tab comes back (browsers slow down its timers).
  R.restore().forEach((a) => showAlert(a, false));
  R.onVisible(() => {
    if (ws) return;
    clearTimeout(retryTimer);
    failures = 0;
    connect();
  });

  renderPrefs();
  render();
  connect();
})();
