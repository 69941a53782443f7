// Skywatch page: one WebSocket to the nearest relay (protocol v1, see
// docs/protocol.md), reconnecting with backoff. Candidates are this page's
// own origin, then any fallbacks in ?relays=ws://host:port/ws,... (used by
// `make dev` and the e2e suite, where "VMs" are ports on one host; on Fly
// the own origin alone reaches another VM through the anycast proxy).
"use strict";

(() => {
  const MAX_SHOWN = 100;
  const MIN_BACKOFF = 250, MAX_BACKOFF = 5000;

  const $ = (id) => document.getElementById(id);
  const statusEl = $("status"), vmEl = $("vm"), form = $("form"), input = $("text"),
    send = $("send"), notice = $("notice"), list = $("alerts");
  const R = window.SkywatchResume, gap = $("gap"); // [resume] resume.js: since, repeats, gaps

  const own = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const fallbacks = (new URLSearchParams(location.search).get("relays") || "")
    .split(",").map((s) => s.trim()).filter(Boolean);
  const candidates = [own, ...fallbacks.filter((u) => u !== own)];

  const seen = new Set();   // alert ids shown, so a reconnect never shows one twice
  let ws = null, idx = 0, failures = 0;
  let retryTimer = 0; // [resume] so a tab made visible can reconnect at once

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
    send.disabled = state !== "open";
  }

  function connect() {
    const url = candidates[idx];
    setStatus("connecting", "Connecting to " + url + "…");
    let sock;
    try {
      sock = new WebSocket(R.withSince(url)); // [resume] catch up from the newest alert shown
    } catch (e) {
      retry("cannot open " + url);
      return;
    }
    ws = sock;
    sock.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      handle(msg);
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      const why = ev.code === 1012 ? "VM restarting" : ev.reason || "connection lost";
      retry(why + " (" + ev.code + ")");
    };
  }

  function retry(why) {
    vmEl.dataset.vm = "";
    vmEl.textContent = "Not connected to a VM";
    // Try the next candidate at once; back off, with jitter, once each has
    // failed, so a fleet restart is not met by a stampede of reconnects.
    idx = (idx + 1) % candidates.length;
    failures++;
    const over = failures - candidates.length;
    const wait = over < 0 ? 0 : Math.min(MAX_BACKOFF, MIN_BACKOFF * 2 ** over) * (0.5 + Math.random() / 2);
    setStatus("closed", "Disconnected: " + why + ". Reconnecting" +
      (wait ? " in " + (wait / 1000).toFixed(1) + " s" : "") + "…");
    retryTimer = setTimeout(connect, wait); // [resume]
  }

  function handle(msg) {
    switch (msg.type) {
      case "hello":
        failures = 0;
        if (msg.limits && msg.limits.text) input.maxLength = msg.limits.text;
        vmEl.dataset.vm = msg.vm;
        vmEl.textContent = "Connected to VM " + msg.vm + " in " + msg.region;
        setStatus("open", "Connected");
        break;
      case "alert":
        show(msg);
        break;
      case "resumed": { // [resume] the replay is over; say so if something may be missing
        const text = R.onResumed(msg);
        if (text) { gap.textContent = text; gap.hidden = false; }
        break;
      }
      case "ack":
        notice.textContent = "";
        break;
      case "error":
        notice.textContent = msg.message || msg.code;
        break;
    }
  }

  function show(a, restored) {
    if (!a.id || seen.has(a.id)) return;
    if (!restored && !R.accept(a)) return; // [resume] a repeat from a replay
    seen.add(a.id);
    const li = document.createElement("li");
    li.dataset.id = a.id;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = a.text;
    const meta = document.createElement("span");
    meta.className = "meta";
    const origin = a.origin || {};
    const at = new Date(a.sent_at);
    meta.textContent = "from VM " + origin.vm + " (" + origin.region + ") at " +
      (isNaN(at) ? a.sent_at : at.toLocaleTimeString());
    li.append(text, meta);
    R.place(list, li, a); // [resume] in time order: a replay may bring older ones
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const nonce = Math.random().toString(36).slice(2, 12);
    // Empty text is fine: the relay applies the default text itself.
    ws.send(JSON.stringify({ type: "alert", text: input.value.trim(), nonce }));
    input.value = "";
  });

  // [resume] show what was shown before a reload; reconnect at once when a
  // hidden tab comes back.
  R.restore().forEach((a) => show(a, true));
  R.onVisible(() => {
    if (ws) return;
    clearTimeout(retryTimer);
    failures = 0;
    connect();
  });
  connect();
})();
