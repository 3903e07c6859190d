/**
 * Live updates over the host app's supabase-js client: one private channel per project topic
 * (`metrics:<project_id>`), shared by every panel that needs it and removed with its last user.
 *
 * Broadcast is not replayed and background tabs lose their socket, so the connection tells its users
 * to `resync` (read the gap from the API) after every SUBSCRIBED — first join and each rejoin — and
 * whenever a hidden tab becomes visible again. The status and the age of the newest data drive the
 * ConnectionBadge: a stale chart must never look current.
 */

/** @typedef {'connecting' | 'live' | 'reconnecting' | 'offline'} LiveStatus */

/**
 * @typedef {object} LiveHandlers
 * @property {(payload: any) => void} [rollup]   the `rollup` broadcast (docs/schema.md, Live messages)
 * @property {(payload: any) => void} [alert]    the `alert` broadcast (docs/alerting.md)
 * @property {() => void} [resync]               read what may have been missed from the API
 */

/** After this long without a subscribed channel, "reconnecting" becomes "offline". */
export const OFFLINE_AFTER_MS = 30_000;
/** A channel the server closed is joined again after this delay (doubling, at most 30 s). */
const REJOIN_MIN_MS = 1_000;
const REJOIN_MAX_MS = 30_000;
/** A refused join asks supabase-js for a new token at most this often. */
const REFRESH_EVERY_MS = 10_000;

/** @type {WeakMap<object, LiveConnection>} */
const connections = new WeakMap();

/**
 * The live connection of a supabase-js client: one per client, so a page never opens a second socket.
 * @param {any} supabase
 * @returns {LiveConnection}
 */
export function getLiveConnection(supabase) {
  let connection = connections.get(supabase);
  if (!connection) {
    connection = new LiveConnection(supabase);
    connections.set(supabase, connection);
  }
  return connection;
}

/** One project's channel and the handlers of its users. */
class Topic {
  /** @param {string} projectId */
  constructor(projectId) {
    this.projectId = projectId;
    /** @type {Set<LiveHandlers>} */
    this.users = new Set();
    /** @type {any} */
    this.channel = null;
    /** @type {'joining' | 'subscribed' | 'down'} */
    this.state = 'joining';
    this.rejoinDelay = REJOIN_MIN_MS;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.rejoinTimer = null;
    this.closed = false;
  }
}

export class LiveConnection {
  /** @type {LiveStatus} */
  status = $state('connecting');
  /** @type {number | null} ms epoch of the newest rollup message or completed backfill */
  lastDataAt = $state(null);

  /**
   * @param {any} supabase
   * @param {{now?: () => number, document?: Document | null, window?: Window | null}} [env]
   */
  constructor(supabase, env = {}) {
    this.supabase = supabase;
    this.now = env.now ?? (() => Date.now());
    /** @type {Map<string, Topic>} */
    this.topics = new Map();
    /** @type {number | null} since when no channel has been subscribed */
    this.downSince = null;
    this.doc = env.document === undefined ? globalThis.document ?? null : env.document;
    this.win = env.window === undefined ? globalThis.window ?? null : env.window;
    this.onVisibility = () => {
      if (this.doc?.visibilityState === 'visible') this.resyncAll();
    };
    this.onNetwork = () => this.updateStatus();
    /** @type {(() => void) | null} */
    this.stopAuth = null;
    this.statusTimer = null;
    this.lastRefreshAt = -Infinity;
  }

  /**
   * Join the project's topic (or share the existing channel) and call `handlers` on its messages.
   * @param {string} projectId
   * @param {LiveHandlers} handlers
   * @returns {() => void} unsubscribe (the channel goes with its last user)
   */
  subscribe(projectId, handlers) {
    this.start();
    let topic = this.topics.get(projectId);
    if (!topic) {
      topic = new Topic(projectId);
      this.topics.set(projectId, topic);
      void this.join(topic);
    } else if (topic.state === 'subscribed') {
      // a late user still needs its first read of the current state
      queueMicrotask(() => handlers.resync?.());
    }
    topic.users.add(handlers);
    const joined = topic;
    return () => this.leave(joined, handlers);
  }

  /** A panel finished reading from the API: that counts as fresh data for the badge. */
  noteData() {
    this.lastDataAt = this.now();
  }

  /** Leave every topic and stop listening (the supabase client itself stays the host's). */
  destroy() {
    for (const topic of [...this.topics.values()]) this.close(topic);
    this.stop();
  }

  /** Listen for token refreshes, tab visibility and network changes once there is a first user. */
  start() {
    if (this.stopAuth) return;
    const { data } = this.supabase.auth.onAuthStateChange((/** @type {string} */ event, /** @type {any} */ session) => {
      // a private channel checks the token on join and on every refresh: hand each new one to Realtime
      if ((event === 'TOKEN_REFRESHED' || event === 'SIGNED_IN') && session?.access_token) {
        void this.supabase.realtime.setAuth(session.access_token);
      }
    });
    this.stopAuth = () => data?.subscription?.unsubscribe();
    this.doc?.addEventListener('visibilitychange', this.onVisibility);
    this.win?.addEventListener('online', this.onNetwork);
    this.win?.addEventListener('offline', this.onNetwork);
    // "reconnecting" turns into "offline" by time alone, without any event
    this.statusTimer = setInterval(() => this.updateStatus(), 1_000);
  }

  stop() {
    this.stopAuth?.();
    this.stopAuth = null;
    this.doc?.removeEventListener('visibilitychange', this.onVisibility);
    this.win?.removeEventListener('online', this.onNetwork);
    this.win?.removeEventListener('offline', this.onNetwork);
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.statusTimer = null;
  }

  /**
   * Create the channel, give Realtime the current token, then subscribe.
   * @param {Topic} topic
   */
  async join(topic) {
    topic.state = 'joining';
    this.updateStatus();
    try {
      await this.supabase.realtime.setAuth();
    } catch {
      // no session yet or a transient error: the join below fails and is retried
    }
    if (topic.closed) return;
    const channel = this.supabase.channel(`metrics:${topic.projectId}`, { config: { private: true } });
    topic.channel = channel;
    channel
      .on('broadcast', { event: 'rollup' }, (/** @type {{payload: any}} */ message) => this.deliver(topic, 'rollup', message.payload))
      .on('broadcast', { event: 'alert' }, (/** @type {{payload: any}} */ message) => this.deliver(topic, 'alert', message.payload))
      .subscribe((/** @type {string} */ status, /** @type {Error|undefined} */ error) =>
        this.onChannelStatus(topic, channel, status, error)
      );
  }

  /**
   * @param {Topic} topic
   * @param {'rollup' | 'alert'} event
   * @param {any} payload
   */
  deliver(topic, event, payload) {
    if (event === 'rollup') this.lastDataAt = this.now();
    for (const user of [...topic.users]) user[event]?.(payload);
  }

  /**
   * supabase-js reports SUBSCRIBED on the first join and on every rejoin after a lost socket; it
   * rejoins by itself after CHANNEL_ERROR and TIMED_OUT. CLOSED that we did not ask for (the server
   * closed the channel, e.g. an expired token) gets a fresh channel after a backoff.
   * @param {Topic} topic
   * @param {any} channel
   * @param {string} status
   * @param {Error} [error]
   */
  onChannelStatus(topic, channel, status, error) {
    if (topic.closed || topic.channel !== channel) return;
    if (status === 'CHANNEL_ERROR' && /unauthori[sz]ed|permission|expired|jwt/i.test(String(error?.message ?? ''))) {
      void this.refreshToken();
    }
    if (status === 'SUBSCRIBED') {
      topic.state = 'subscribed';
      topic.rejoinDelay = REJOIN_MIN_MS;
      this.updateStatus();
      for (const user of [...topic.users]) user.resync?.();
      return;
    }
    topic.state = 'down';
    this.updateStatus();
    if (status === 'CLOSED') this.scheduleRejoin(topic);
  }

  /**
   * A join refused for its token (it expired while the socket was gone): ask supabase-js for a new one, at
   * most every REFRESH_EVERY_MS, and hand it to Realtime; supabase-js's own rejoin then carries it.
   */
  async refreshToken() {
    const now = this.now();
    if (now - this.lastRefreshAt < REFRESH_EVERY_MS) return;
    this.lastRefreshAt = now;
    try {
      const { data } = await this.supabase.auth.refreshSession();
      if (data?.session?.access_token) await this.supabase.realtime.setAuth(data.session.access_token);
    } catch {
      // no network yet: the next refused join asks again
    }
  }

  /** @param {Topic} topic */
  scheduleRejoin(topic) {
    if (topic.rejoinTimer || topic.closed) return;
    const delay = topic.rejoinDelay;
    topic.rejoinDelay = Math.min(delay * 2, REJOIN_MAX_MS);
    topic.rejoinTimer = setTimeout(() => {
      topic.rejoinTimer = null;
      if (topic.closed) return;
      const old = topic.channel;
      topic.channel = null;
      if (old) void this.supabase.removeChannel(old);
      void this.join(topic);
    }, delay);
  }

  /**
   * @param {Topic} topic
   * @param {LiveHandlers} handlers
   */
  leave(topic, handlers) {
    topic.users.delete(handlers);
    if (topic.users.size === 0) this.close(topic);
  }

  /** @param {Topic} topic */
  close(topic) {
    topic.closed = true;
    if (topic.rejoinTimer) clearTimeout(topic.rejoinTimer);
    if (this.topics.get(topic.projectId) === topic) this.topics.delete(topic.projectId);
    if (topic.channel) void this.supabase.removeChannel(topic.channel);
    topic.channel = null;
    if (this.topics.size === 0) this.stop();
    this.updateStatus();
  }

  resyncAll() {
    for (const topic of this.topics.values()) {
      if (topic.state !== 'subscribed') continue; // a rejoin resyncs by itself
      for (const user of [...topic.users]) user.resync?.();
    }
  }

  /** live: every topic subscribed; offline: no network, or down for OFFLINE_AFTER_MS. */
  updateStatus() {
    const topics = [...this.topics.values()];
    if (topics.length === 0) return;
    const allUp = topics.length > 0 && topics.every((t) => t.state === 'subscribed');
    if (allUp) {
      this.downSince = null;
      this.status = 'live';
      return;
    }
    const now = this.now();
    this.downSince ??= now;
    const everUp = this.status !== 'connecting';
    if (this.win?.navigator?.onLine === false || now - this.downSince >= OFFLINE_AFTER_MS) {
      this.status = 'offline';
    } else {
      this.status = everUp ? 'reconnecting' : 'connecting';
    }
  }
}
