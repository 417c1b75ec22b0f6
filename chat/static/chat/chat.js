/* Grace chat page: plain JavaScript, no build step.
 *
 * Talks to /ws/chat/ (frames: start, token, done, error) and falls back to
 * POST /api/chat/ (30 s AbortController timeout) while the websocket cannot connect.
 */
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("grace-config").textContent);
  const $ = (id) => document.getElementById(id);
  const el = {
    connection: $("connection"),
    connectionText: $("connection-text"),
    reconnectNow: $("reconnect-now"),
    list: $("conversation-list"),
    listStatus: $("conversations-status"),
    more: $("more-conversations"),
    newConversation: $("new-conversation"),
    messages: $("messages"),
    empty: $("empty-state"),
    degraded: $("degraded"),
    degradedTitle: $("degraded-title"),
    degradedParts: $("degraded-parts"),
    degradedRid: $("degraded-request-id"),
    error: $("error"),
    errorMessage: $("error-message"),
    errorDetails: $("error-details"),
    errorRidLine: $("error-request-id-line"),
    errorRid: $("error-request-id"),
    retry: $("retry"),
    form: $("composer"),
    input: $("message"),
    counter: $("counter"),
    fieldError: $("message-error"),
    domain: $("domain"),
    send: $("send"),
    stop: $("stop"),
    regenerate: $("regenerate"),
    announcer: $("announcer"),
  };

  const STAGE_NAMES = {
    inspect: "security inspection",
    recall: "memory recall",
    respond: "model reply",
    store: "saving the conversation",
    followup: "follow-up tasks",
  };

  // Flags that say what happened without anything failing (chat/pipeline.py).
  const INFORMATIONAL_FLAGS = ["security_alert", "redacted", "blocked", "stopped"];

  const state = {
    socket: null,
    socketOpen: false,
    attempt: 0,
    reconnectTimer: null,
    countdownTimer: null,
    authFailed: false,
    conversationId: null,
    pending: null, // the message (or the regeneration) in flight
    retryPayload: null, // {message, domain, conversationId} or {regenerate} that failed
    nextPage: 0,
  };

  /* ---------- validation: the same rules and messages as the API ---------- */

  const charCount = (text) => Array.from(text.trim()).length;

  function validationProblem(text) {
    if (text.length === 0) return config.messages.empty;
    if (text.trim().length === 0) return config.messages.blank;
    if (charCount(text) > config.maxChars) return config.messages.too_long;
    return null;
  }

  function updateCounter() {
    const count = charCount(el.input.value);
    el.counter.textContent = `${count} / ${config.maxChars}`;
    const over = count > config.maxChars;
    el.counter.classList.toggle("over", over);
    el.input.setAttribute("aria-invalid", over ? "true" : "false");
    if (over) {
      showFieldError(config.messages.too_long);
    } else if (el.fieldError.textContent) {
      showFieldError("");
    }
  }

  function showFieldError(text) {
    el.fieldError.textContent = text;
    el.input.setAttribute("aria-invalid", text ? "true" : "false");
  }

  /* ---------- rendering ---------- */

  function appendMessage(role, text, opts = {}) {
    const item = document.createElement("li");
    item.className = `message message-${role}`;
    const who = document.createElement("span");
    who.className = "visually-hidden";
    who.textContent = role === "user" ? "You said: " : "Grace replied: ";
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = text;
    const meta = document.createElement("div");
    meta.className = "meta";
    item.append(who, body, meta);
    if (opts.streaming) {
      item.classList.add("streaming");
      item.setAttribute("aria-busy", "true");
    }
    el.messages.append(item);
    el.empty.hidden = true;
    item.scrollIntoView({ block: "end" });
    return item;
  }

  /* A small, safe subset of Markdown (code blocks, `code`, **bold**) built as DOM
     nodes: nothing from a reply is ever parsed as HTML. */
  function renderRich(target, text) {
    target.textContent = "";
    const blocks = text.split(/```[^\n]*\n?/);
    blocks.forEach((block, index) => {
      if (index % 2 === 1) {
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        code.textContent = block.replace(/\n$/, "");
        pre.append(code);
        target.append(pre);
        return;
      }
      for (const paragraph of paragraphsOf(block)) {
        const p = document.createElement("p");
        appendInline(p, paragraph);
        target.append(p);
      }
    });
  }

  /* Paragraphs of a reply: blank lines separate them; a single line break inside one
     (a source's hard wrap, mid-sentence) joins with a space, except before a list item
     or a heading, which keep their own line. */
  function paragraphsOf(text) {
    return text
      .split(/\n[ \t]*\n\s*/)
      .map((paragraph) => paragraph.trim())
      .filter(Boolean)
      .map((paragraph) => paragraph.replace(/[ \t]*\n[ \t]*(?!\s*(?:[-*+•]\s|\d+[.)]\s|#))/g, " "));
  }

  function appendInline(target, text) {
    for (const part of text.split(/(`[^`\n]+`|\*\*[^*\n]+\*\*)/)) {
      if (!part) continue;
      if (part.startsWith("`") && part.endsWith("`") && part.length > 2) {
        const code = document.createElement("code");
        code.textContent = part.slice(1, -1);
        target.append(code);
      } else if (part.startsWith("**") && part.endsWith("**") && part.length > 4) {
        const strong = document.createElement("strong");
        strong.textContent = part.slice(2, -2);
        target.append(strong);
      } else {
        target.append(document.createTextNode(part));
      }
    }
  }

  /* ---------- a reply's alternatives: Regenerate keeps the earlier answers ---------- */

  // versions: [{id, text, body}] oldest first; the newest is shown.
  function setVersions(item, versions) {
    item.versions = versions;
    showVersion(item, versions.length - 1);
  }

  function showVersion(item, index) {
    const versions = item.versions || [];
    const version = versions[index];
    if (!version) return;
    item.versionIndex = index;
    if (version.id) item.dataset.messageId = version.id;
    renderRich(item.querySelector(".body"), version.text);
    setMeta(item, version.body);
    let nav = item.querySelector(".alternatives");
    if (versions.length < 2) {
      if (nav) nav.remove();
      return;
    }
    if (!nav) {
      nav = alternativesNav(item);
      item.append(nav);
    }
    nav.hidden = false;
    nav.querySelector(".alt-position").textContent = `${index + 1}/${versions.length}`;
    nav.querySelector(".alt-prev").disabled = index === 0;
    nav.querySelector(".alt-next").disabled = index === versions.length - 1;
  }

  function alternativesNav(item) {
    const nav = document.createElement("div");
    nav.className = "alternatives";
    nav.setAttribute("role", "group");
    nav.setAttribute("aria-label", "Answers to this message");
    const step = (kind, text, label, delta) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `alt-${kind}`;
      button.textContent = text;
      button.setAttribute("aria-label", label);
      button.addEventListener("click", () => showVersion(item, item.versionIndex + delta));
      return button;
    };
    const position = document.createElement("span");
    position.className = "alt-position";
    nav.append(step("prev", "<", "Previous answer", -1), position, step("next", ">", "Next answer", 1));
    return nav;
  }

  function lastReply() {
    const replies = el.messages.querySelectorAll(".message-assistant");
    return replies.length ? replies[replies.length - 1] : null;
  }

  /* The knowledge entries a reply used (metadata.sources), as citations under it. */
  function setSources(item, sources) {
    const old = item.querySelector(".sources");
    if (old) old.remove();
    if (!Array.isArray(sources) || !sources.length) return;
    const box = document.createElement("div");
    box.className = "sources";
    const label = document.createElement("span");
    label.className = "sources-label";
    label.textContent = sources.length === 1 ? "Source:" : "Sources:";
    const list = document.createElement("ol");
    for (const source of sources) {
      if (!source || !source.title) continue;
      const li = document.createElement("li");
      li.className = "source";
      li.textContent = source.title;
      if (source.source) {
        const where = document.createElement("span");
        where.className = "source-file";
        where.textContent = ` (${source.source})`;
        li.append(where);
      }
      list.append(li);
    }
    box.append(label, list);
    item.querySelector(".meta").before(box);
  }

  function setMeta(item, body) {
    setSources(item, body && body.metadata && body.metadata.sources);
    const meta = item.querySelector(".meta");
    meta.textContent = "";
    const flags = (body.metadata && body.metadata.flags) || [];
    if (flags.includes("stopped")) addBadge(meta, "stopped", "Stopped");
    if (body.degraded) addBadge(meta, "degraded", "Degraded");
    if (body.metadata && body.metadata.backend) addBadge(meta, "backend", body.metadata.backend);
    if (body.request_id) {
      const rid = document.createElement("span");
      rid.className = "rid";
      rid.textContent = `request ${body.request_id}`;
      meta.append(rid);
    }
  }

  function addBadge(parent, kind, text) {
    const badge = document.createElement("span");
    badge.className = `badge badge-${kind}`;
    badge.textContent = text;
    parent.append(badge);
  }

  function clearBanners() {
    el.degraded.hidden = true;
    el.error.hidden = true;
  }

  function failedParts(metadata) {
    const stages = (metadata && metadata.stages) || {};
    const parts = [];
    for (const [stage, status] of Object.entries(stages)) {
      if (status && !["ok", "flagged", "redacted"].includes(status)) {
        parts.push(`${STAGE_NAMES[stage] || stage} (${status})`);
      }
    }
    return parts;
  }

  /* What a degraded reply's flags mean, in plain language (the flags go in the details). */
  function degradedSummary(flags) {
    const has = (flag) => flags.includes(flag);
    if (has("response_truncated")) {
      return has("llm_timeout")
        ? "The model ran out of time; this answer is cut short."
        : "The model failed part-way; this answer is cut short.";
    }
    if (has("response_fallback") || has("circuit_open")) {
      return "Answered from the knowledge base; the model is unavailable.";
    }
    if (has("fallback_failed")) return "No answer could be written; please try again.";
    return "This reply is degraded.";
  }

  function showDegraded(body) {
    const parts = failedParts(body.metadata);
    const flags = (body.metadata && body.metadata.flags) || [];
    const pieces = [];
    if (parts.length) pieces.push(`Parts that failed: ${parts.join(", ")}.`);
    if (flags.length) pieces.push(`Flags: ${flags.join(", ")}.`);
    el.degradedTitle.textContent = degradedSummary(flags);
    el.degradedParts.textContent = pieces.join(" ") || "Part of the answer could not be produced.";
    el.degradedRid.textContent = body.request_id || "";
    el.degraded.hidden = false;
  }

  function showError(body, payload) {
    el.errorMessage.textContent = (body && body.message) || "Something went wrong.";
    el.errorDetails.textContent = "";
    for (const detail of (body && body.details) || []) {
      if (!detail || !detail.message) continue;
      const li = document.createElement("li");
      li.textContent = detail.field ? `${detail.field}: ${detail.message}` : detail.message;
      el.errorDetails.append(li);
    }
    const rid = body && body.request_id;
    el.errorRid.textContent = rid || "";
    el.errorRidLine.hidden = !rid;
    state.retryPayload = payload || null;
    el.retry.hidden = !payload;
    el.error.hidden = false;
    el.error.dataset.error = (body && body.error) || "error";
  }

  function setBusy(busy) {
    el.send.disabled = busy;
    el.stop.disabled = !busy;
    el.regenerate.disabled = busy || !lastReply();
    el.form.setAttribute("aria-busy", busy ? "true" : "false");
    // Screen readers wait for the streamed reply and then read it once.
    el.messages.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function announce(text) {
    el.announcer.textContent = "";
    window.setTimeout(() => { el.announcer.textContent = text; }, 30);
  }

  /* ---------- the connection ---------- */

  function setConnection(stateName, text) {
    el.connection.dataset.state = stateName;
    el.connectionText.textContent = text;
    el.reconnectNow.hidden = stateName !== "reconnecting";
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + config.wsPath;
  }

  function connect() {
    window.clearTimeout(state.reconnectTimer);
    window.clearInterval(state.countdownTimer);
    if (state.authFailed) return;
    setConnection("connecting", "Connecting…");
    let socket;
    try {
      socket = new WebSocket(socketUrl(), [config.subprotocol]);
    } catch (err) {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    socket.addEventListener("open", () => {
      if (state.socket !== socket) return;
      state.socketOpen = true;
      state.attempt = 0;
      setConnection("open", "Connected");
    });
    socket.addEventListener("message", (event) => {
      if (state.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (state.socket !== socket) return;
      state.socket = null;
      state.socketOpen = false;
      if (state.pending && state.pending.via === "ws") {
        failPending({
          error: "connection_lost",
          message: "The connection dropped before the reply finished.",
          request_id: state.pending.requestId,
        });
      }
      if (event.code === 4401) {
        state.authFailed = true;
        setConnection("unauthorized", "Not logged in");
        window.location.assign(`${config.loginUrl}?next=${encodeURIComponent("/")}`);
        return;
      }
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    const base = config.reconnectBaseMs * 2 ** Math.min(state.attempt, 10);
    const delay = Math.round(Math.min(config.reconnectMaxMs, base) * (0.8 + Math.random() * 0.4));
    state.attempt += 1;
    const due = Date.now() + delay;
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setConnection("reconnecting", `Disconnected; reconnecting in ${seconds} s`);
    };
    tick();
    state.countdownTimer = window.setInterval(tick, 1000);
    state.reconnectTimer = window.setTimeout(connect, delay);
  }

  function waitForSocket(ms) {
    if (state.socketOpen) return Promise.resolve(true);
    if (!state.socket) return Promise.resolve(false);
    return new Promise((resolve) => {
      const started = Date.now();
      const poll = window.setInterval(() => {
        if (state.socketOpen || !state.socket || Date.now() - started > ms) {
          window.clearInterval(poll);
          resolve(state.socketOpen);
        }
      }, 50);
    });
  }

  /* ---------- one message and its reply ---------- */

  async function sendMessage(message, domain, conversationId) {
    if (state.pending) return;
    const problem = validationProblem(message);
    if (problem) {
      showFieldError(problem);
      el.input.focus();
      return;
    }
    showFieldError("");
    clearBanners();
    const payload = { message, domain, conversationId };
    const userItem = appendMessage("user", message);
    const replyItem = appendMessage("assistant", "", { streaming: true });
    state.pending = { payload, userItem, replyItem, text: "", requestId: null, via: null };
    setBusy(true);
    const useSocket = await waitForSocket(config.connectWaitMs);
    if (!state.pending) return;
    if (useSocket && state.socket) {
      state.pending.via = "ws";
      state.socket.send(JSON.stringify({
        type: "message",
        message,
        domain,
        conversation_id: conversationId,
      }));
    } else {
      state.pending.via = "rest";
      sendRest(state.pending);
    }
  }

  /* Regenerate: the last message answered again (its earlier answers kept, "< 2/2 >"). */
  async function regenerate() {
    if (state.pending) return;
    let item = lastReply();
    if (item && !item.dataset.messageId && state.conversationId) {
      await openConversation(state.conversationId); // the stored transcript has the IDs
      item = lastReply();
    }
    if (!item || !item.dataset.messageId || state.pending) return;
    clearBanners();
    const messageId = item.dataset.messageId;
    const payload = { regenerate: messageId, conversationId: state.conversationId };
    const nav = item.querySelector(".alternatives");
    if (nav) nav.hidden = true;
    item.classList.add("streaming");
    item.setAttribute("aria-busy", "true");
    item.querySelector(".body").textContent = "";
    item.querySelector(".meta").textContent = "";
    state.pending = {
      payload, userItem: null, replyItem: item, text: "", requestId: null, via: null,
      previousVersion: item.versionIndex,
    };
    setBusy(true);
    const useSocket = await waitForSocket(config.connectWaitMs);
    if (!state.pending) return;
    if (useSocket && state.socket) {
      state.pending.via = "ws";
      state.socket.send(JSON.stringify({
        type: "regenerate",
        message_id: messageId,
        conversation_id: payload.conversationId,
      }));
    } else {
      state.pending.via = "rest";
      sendRest(state.pending);
    }
  }

  function restRequest(payload) {
    if (payload.regenerate) {
      const conversation = encodeURIComponent(payload.conversationId);
      const message = encodeURIComponent(payload.regenerate);
      return {
        url: `${config.apiConversations}/${conversation}/messages/${message}/regenerate`,
        body: {},
      };
    }
    return {
      url: config.apiChat,
      body: {
        message: payload.message,
        domain: payload.domain,
        conversation_id: payload.conversationId,
      },
    };
  }

  async function sendRest(pending) {
    const controller = new AbortController();
    pending.controller = controller;
    const timer = window.setTimeout(() => { pending.timedOut = true; controller.abort(); },
      config.restTimeoutMs);
    setConnection(el.connection.dataset.state, `${el.connectionText.textContent} (sending over HTTP)`);
    try {
      const request = restRequest(pending.payload);
      const response = await fetch(request.url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json",
          "X-CSRFToken": csrfToken(),
        },
        body: JSON.stringify(request.body),
        signal: controller.signal,
      });
      let body = null;
      try {
        body = await response.json();
      } catch (err) {
        body = null;
      }
      if (state.pending !== pending) return;
      if (response.ok && body) {
        finishPending(body);
      } else if (response.status === 401) {
        window.location.assign(`${config.loginUrl}?next=${encodeURIComponent("/")}`);
      } else {
        failPending(body || { error: "http_error", message: `The server answered ${response.status}.` });
      }
    } catch (err) {
      if (state.pending !== pending) return;
      if (pending.stopped) {
        finishPending({ response: pending.text, degraded: false, metadata: { flags: ["stopped"] } });
      } else if (pending.timedOut) {
        failPending({
          error: "timeout",
          message: `No reply within ${Math.round(config.restTimeoutMs / 1000)} seconds.`,
        });
      } else {
        failPending({ error: "network_error", message: "Grace could not be reached." });
      }
    } finally {
      window.clearTimeout(timer);
    }
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : config.csrfToken;
  }

  function onFrame(frame) {
    const pending = state.pending;
    if (frame.type === "start") {
      if (!pending) return;
      pending.requestId = frame.request_id;
      pending.replyItem.dataset.requestId = frame.request_id;
      if (frame.conversation_id) rememberConversation(frame.conversation_id);
    } else if (frame.type === "token") {
      if (!pending || (pending.requestId && frame.request_id !== pending.requestId)) return;
      pending.text += frame.text;
      pending.replyItem.querySelector(".body").textContent = pending.text;
      pending.replyItem.scrollIntoView({ block: "end" });
    } else if (frame.type === "done") {
      if (!pending) return;
      finishPending(frame);
    } else if (frame.type === "error") {
      if (pending && frame.error === "busy") {
        showError(frame, null);
        return;
      }
      if (pending) {
        failPending(frame);
      } else {
        showError(frame, null);
      }
    }
  }

  function finishPending(body) {
    const pending = state.pending;
    state.pending = null;
    const item = pending.replyItem;
    item.classList.remove("streaming");
    item.removeAttribute("aria-busy");
    const text = typeof body.response === "string" ? body.response : pending.text;
    const version = { id: body.message_id || null, text, body };
    const earlier = pending.payload.regenerate ? item.versions || [] : [];
    setVersions(item, [...earlier, version]);
    if (body.conversation_id) {
      rememberConversation(body.conversation_id);
      loadConversations();
    }
    if (body.degraded) showDegraded(body);
    const flags = (body.metadata && body.metadata.flags) || [];
    announce(flags.includes("stopped") ? "Reply stopped." : "Reply finished.");
    setBusy(false);
    el.input.focus();
  }

  function failPending(body) {
    const pending = state.pending;
    state.pending = null;
    if (pending && pending.payload.regenerate) {
      // The answer shown before stays.
      pending.replyItem.classList.remove("streaming");
      pending.replyItem.removeAttribute("aria-busy");
      showVersion(pending.replyItem, pending.previousVersion);
    } else if (pending) {
      pending.replyItem.remove();
      pending.userItem.classList.add("failed");
      if (body && body.error === "validation_error") {
        pending.userItem.remove();
        el.input.value = pending.payload.message;
        updateCounter();
        const first = (body.details || []).find((d) => d && d.message);
        showFieldError(first ? first.message : body.message);
      }
    }
    const invalid = body && body.error === "validation_error";
    const payload = pending && body && !invalid ? pending.payload : null;
    // A message the page checked itself goes back to the box; anything else is a banner.
    if (!invalid || (pending && pending.payload.regenerate)) showError(body, payload);
    setBusy(false);
    if (payload) el.retry.focus();
    else el.input.focus();
  }

  function stop() {
    const pending = state.pending;
    if (!pending) return;
    pending.stopped = true;
    el.stop.disabled = true;
    if (pending.via === "ws" && state.socket) {
      state.socket.send(JSON.stringify({ type: "stop" }));
    } else if (pending.via === "rest" && pending.controller) {
      pending.controller.abort();
    }
  }

  /* ---------- conversations ---------- */

  async function apiGet(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      window.location.assign(`${config.loginUrl}?next=${encodeURIComponent("/")}`);
      throw new Error("unauthorized");
    }
    if (!response.ok) {
      const error = new Error(`HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  /* The open conversation is in the address (?c=<id>, to bookmark) and in localStorage:
     a reload, or the next visit, reopens it. */
  const STORAGE_KEY = "grace.conversation";

  function rememberConversation(id) {
    state.conversationId = id;
    try {
      if (id) window.localStorage.setItem(STORAGE_KEY, id);
      else window.localStorage.removeItem(STORAGE_KEY);
    } catch (err) {
      // storage off (private mode): the address still has it
    }
    const url = new URL(window.location.href);
    if (id) url.searchParams.set("c", id);
    else url.searchParams.delete("c");
    if (url.href !== window.location.href) window.history.replaceState(null, "", url);
  }

  function restoreConversation() {
    let id = new URL(window.location.href).searchParams.get("c");
    if (!id) {
      try {
        id = window.localStorage.getItem(STORAGE_KEY);
      } catch (err) {
        id = null;
      }
    }
    if (!id) return;
    if (/^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$/i.test(id)) openConversation(id, { restoring: true });
    else rememberConversation(null);
  }

  function conversationTitle(c) {
    const title = c.title || c.preview || c.first_message || "Conversation";
    return title.length > 60 ? `${title.slice(0, 57)}…` : title;
  }

  async function loadConversations(append = false) {
    const offset = append ? state.nextPage : 0;
    try {
      const body = await apiGet(`${config.apiConversations}?limit=${config.pageSize}&offset=${offset}`);
      const items = Array.isArray(body) ? body : body.items || [];
      if (!append) el.list.textContent = "";
      for (const c of items) el.list.append(conversationItem(c));
      state.nextPage = offset + items.length;
      const total = Array.isArray(body) ? items.length : body.count;
      el.more.hidden = !(typeof total === "number" && state.nextPage < total);
      el.listStatus.textContent = el.list.children.length ? "" : "No conversations yet.";
    } catch (err) {
      el.listStatus.textContent = "Conversations could not be loaded.";
    }
  }

  function conversationItem(c) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conversation";
    button.dataset.id = c.id;
    button.textContent = conversationTitle(c);
    if (c.id === state.conversationId) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => openConversation(c.id));
    li.append(button);
    return li;
  }

  async function openConversation(id, opts = {}) {
    if (state.pending) return;
    clearBanners();
    try {
      const url = `${config.apiConversations}/${encodeURIComponent(id)}`;
      let body = await apiGet(`${url}?limit=${config.historySize}`);
      if (body.message_count > config.historySize) {
        // Show the newest messages of a long conversation.
        body = await apiGet(`${url}?limit=${config.historySize}&offset=${body.message_count - config.historySize}`);
      }
      if (state.pending) return;
      rememberConversation(id);
      el.messages.textContent = "";
      const messages = body.messages || body.items || [];
      for (const m of messages) {
        const role = m.role === "user" ? "user" : "assistant";
        const item = appendMessage(role, m.content || m.text || "");
        if (role === "assistant") {
          const versions = [...(m.alternatives || []), m].map((v) => {
            const flags = (v.metadata && v.metadata.flags) || [];
            const degraded = flags.some((f) => !INFORMATIONAL_FLAGS.includes(f));
            return { id: v.id, text: v.content || "", body: { metadata: v.metadata, degraded } };
          });
          setVersions(item, versions);
        }
      }
      el.empty.hidden = messages.length > 0;
      for (const b of el.list.querySelectorAll("button.conversation")) {
        if (b.dataset.id === id) b.setAttribute("aria-current", "true");
        else b.removeAttribute("aria-current");
      }
      setBusy(false);
      el.input.focus();
    } catch (err) {
      if (opts.restoring && [404, 422].includes(err.status)) {
        rememberConversation(null); // gone (deleted, or another account's): start afresh
      } else {
        showError({ message: "That conversation could not be loaded." }, null);
      }
    }
  }

  function newConversation() {
    if (state.pending) return;
    rememberConversation(null);
    el.messages.textContent = "";
    el.empty.hidden = false;
    clearBanners();
    for (const b of el.list.querySelectorAll("button.conversation")) b.removeAttribute("aria-current");
    setBusy(false);
    el.input.focus();
  }

  /* ---------- wiring ---------- */

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = el.input.value;
    if (validationProblem(message)) {
      showFieldError(validationProblem(message));
      return;
    }
    el.input.value = "";
    updateCounter();
    sendMessage(message, el.domain.value, state.conversationId);
  });
  el.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!state.pending) el.form.requestSubmit();
    }
  });
  el.input.addEventListener("input", updateCounter);
  el.stop.addEventListener("click", stop);
  el.regenerate.addEventListener("click", regenerate);
  el.retry.addEventListener("click", () => {
    const payload = state.retryPayload;
    if (!payload) return;
    if (payload.regenerate) {
      regenerate();
      return;
    }
    for (const item of el.messages.querySelectorAll(".message.failed")) item.remove();
    sendMessage(payload.message, payload.domain, payload.conversationId);
  });
  el.newConversation.addEventListener("click", newConversation);
  el.more.addEventListener("click", () => loadConversations(true));
  el.reconnectNow.addEventListener("click", () => { state.attempt = 0; connect(); });
  window.addEventListener("online", () => {
    if (!state.socket) { state.attempt = 0; connect(); }
  });
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const text = $(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      const range = document.createRange();
      range.selectNodeContents($(button.dataset.copy));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
    }
    button.textContent = "Copied";
    window.setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });

  updateCounter();
  setBusy(false);
  connect();
  restoreConversation();
  loadConversations();
})();
