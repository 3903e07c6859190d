/**
 * A stand-in for a supabase-js client in unit tests (jsdom has no Realtime server). It records what
 * the code under test asks of the client and lets a test play the server: statuses, broadcasts,
 * token refreshes. The real client is exercised by the browser tests in e2e/.
 */
export function fakeSupabase() {
  /** @type {string[]} */
  const calls = [];
  /** @type {any[]} */
  const channels = [];
  /** @type {Array<(event: string, session: any) => void>} */
  const authListeners = [];
  const client = {
    calls,
    channels,
    realtime: {
      /** @param {string} [token] */
      async setAuth(token) {
        calls.push(`setAuth:${token ?? ''}`);
      }
    },
    auth: {
      /** @param {(event: string, session: any) => void} listener */
      onAuthStateChange(listener) {
        authListeners.push(listener);
        return { data: { subscription: { unsubscribe: () => authListeners.splice(authListeners.indexOf(listener), 1) } } };
      },
      async getSession() {
        return { data: { session: { access_token: 'token-1' } } };
      },
      async refreshSession() {
        calls.push('refreshSession');
        return { data: { session: { access_token: 'token-fresh' } } };
      }
    },
    /** @param {string} name @param {any} options */
    channel(name, options) {
      calls.push(`channel:${name}:${options?.config?.private}`);
      /** @type {Record<string, (message: any) => void>} */
      const handlers = {};
      /** @type {(status: string, error?: Error) => void} */
      let onStatus = () => {};
      const channel = {
        name,
        removed: false,
        /** @param {string} type @param {{event: string}} filter @param {(message: any) => void} handler */
        on(type, filter, handler) {
          handlers[filter.event] = handler;
          return channel;
        },
        /** @param {(status: string, error?: Error) => void} callback */
        subscribe(callback) {
          calls.push(`subscribe:${name}`);
          onStatus = callback;
          return channel;
        },
        /** @param {string} status @param {Error} [error] */
        status(status, error) {
          onStatus(status, error);
        },
        /** @param {string} event @param {any} payload */
        broadcast(event, payload) {
          handlers[event]?.({ type: 'broadcast', event, payload });
        }
      };
      channels.push(channel);
      return channel;
    },
    /** @param {any} channel */
    async removeChannel(channel) {
      channel.removed = true;
      calls.push(`remove:${channel.name}`);
    },
    /** @param {string} event @param {any} session */
    emitAuth(event, session) {
      for (const listener of [...authListeners]) listener(event, session);
    },
    listeners: () => authListeners.length
  };
  return client;
}

/** Let pending promise callbacks (the awaited setAuth) run. */
export const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
