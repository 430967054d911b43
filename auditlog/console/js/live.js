// The live tail: the auditEvents subscription over the graphql-transport-ws
// protocol (connection_init, connection_ack, subscribe, next, error,
// complete, ping, pong), written out here so the console needs no library.
//
// A dropped connection is retried with backoff; each new subscription asks
// for `after` = the newest cursor seen, so the server replays what arrived
// meanwhile before going live: nothing is lost, and the table drops repeats.

const PROTOCOL = "graphql-transport-ws";
const ACK_TIMEOUT_MS = 10000;
const PING_EVERY_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
const MAX_BACKOFF_MS = 15000;
// Close codes after which retrying cannot help (protocol: 4401, 4403; 4400 bad request).
const FATAL_CLOSE = new Set([4400, 4401, 4403]);
const FATAL_ERRORS = new Set(["UNAUTHENTICATED", "FORBIDDEN", "BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED"]);

export class LiveTail {
  // options: url, token, query, filter, after (cursor or null),
  // onEdge(edge), onStatus(state, message) with state live|connecting|reconnecting|off|error|unauthorized
  constructor(options) {
    this.options = options;
    this.after = options.after || null;
    this.socket = null;
    this.stopped = true;
    this.attempt = 0;
    this.timers = new Set();
    this.subscriptionId = 0;
    this.awaitingPong = false;
    this.onOnline = () => { if (!this.stopped && !this.socket) this.connect(); };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.status("connecting", "Connecting…");
    this.connect();
  }

  stop(state = "off", message = "") {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      if (socket.readyState === WebSocket.OPEN && this.subscriptionId) {
        this.send(socket, { id: String(this.subscriptionId), type: "complete" });
      }
      socket.close(1000, "live tail off");
    }
    this.status(state, message);
  }

  status(state, message) {
    this.options.onStatus?.(state, message);
  }

  later(ms, fn) {
    const timer = setTimeout(() => { this.timers.delete(timer); fn(); }, ms);
    this.timers.add(timer);
    return timer;
  }

  clearTimers() {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  send(socket, message) {
    socket.send(JSON.stringify(message));
  }

  connect() {
    this.clearTimers();
    let socket;
    try {
      socket = new WebSocket(this.options.url, PROTOCOL);
    } catch {
      this.dropped("could not open the connection");
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.send(socket, { type: "connection_init", payload: { authorization: `Bearer ${this.options.token}` } });
      this.later(ACK_TIMEOUT_MS, () => { if (this.socket === socket) socket.close(4408, "no connection_ack"); });
    });
    socket.addEventListener("message", (ev) => { if (this.socket === socket) this.receive(socket, ev.data); });
    socket.addEventListener("close", (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (ev.code === 4401) {
        // The token was revoked or expired while the tail ran.
        this.stop("unauthorized", ev.reason || "the token is no longer accepted");
        return;
      }
      if (FATAL_CLOSE.has(ev.code)) {
        this.stop("error", ev.code === 4403 ? "Live tail refused: this token may not read the audit log." :
          `Live tail refused by the service (${ev.reason || ev.code}).`);
        return;
      }
      this.dropped(ev.reason || "connection lost");
    });
  }

  dropped(reason) {
    if (this.stopped) return;
    this.attempt += 1;
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** (this.attempt - 1));
    const wait = Math.round(backoff / 2 + Math.random() * (backoff / 2));
    this.status("reconnecting", `Connection lost (${reason}); reconnecting in ${Math.ceil(wait / 1000)} s…`);
    this.later(wait, () => { if (!this.stopped) this.connect(); });
  }

  keepAlive(socket) {
    this.later(PING_EVERY_MS, () => {
      if (this.socket !== socket || socket.readyState !== WebSocket.OPEN) return;
      this.awaitingPong = true;
      this.send(socket, { type: "ping" });
      this.later(PONG_TIMEOUT_MS, () => {
        if (this.socket === socket && this.awaitingPong) socket.close(4499, "no pong");
      });
      this.keepAlive(socket);
    });
  }

  subscribe(socket) {
    this.subscriptionId += 1;
    this.send(socket, {
      id: String(this.subscriptionId),
      type: "subscribe",
      payload: { query: this.options.query, variables: { filter: this.options.filter, after: this.after } },
    });
  }

  receive(socket, data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      socket.close(4498, "unreadable message");
      return;
    }
    switch (message.type) {
      case "connection_ack":
        this.clearTimers();
        this.attempt = 0;
        this.subscribe(socket);
        this.keepAlive(socket);
        this.status("live", "Live: new events appear at the top.");
        break;
      case "ping":
        this.send(socket, message.payload === undefined ? { type: "pong" } : { type: "pong", payload: message.payload });
        break;
      case "pong":
        this.awaitingPong = false;
        break;
      case "next":
        if (message.id === String(this.subscriptionId)) this.next(socket, message.payload || {});
        break;
      case "error":
        if (message.id === String(this.subscriptionId)) this.failed(socket, message.payload);
        break;
      case "complete":
        // The server ended the stream (a restart or a limit): subscribe again from the newest cursor.
        if (message.id === String(this.subscriptionId)) this.subscribe(socket);
        break;
      default:
        break;
    }
  }

  next(socket, payload) {
    if (Array.isArray(payload.errors) && payload.errors.length) {
      this.failed(socket, payload.errors);
      return;
    }
    const edge = payload.data?.auditEvents;
    if (!edge?.node) return;
    this.after = edge.cursor;
    this.options.onEdge(edge);
  }

  failed(socket, errors) {
    const first = Array.isArray(errors) ? errors[0] : null;
    const code = first?.extensions?.code;
    const message = String(first?.message || "the subscription failed");
    if (FATAL_ERRORS.has(code)) {
      this.stop("error", `Live tail stopped: ${message}`);
    } else {
      socket.close(4500, "subscription error");
    }
  }
}
