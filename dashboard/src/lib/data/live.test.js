import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { fakeSupabase, settle } from '../../test-support/fake-supabase.js';
import { getLiveConnection, LiveConnection, OFFLINE_AFTER_MS } from './live.svelte.js';

/** @type {any} */
let supabase;
/** @type {LiveConnection} */
let live;
let clock = 1_000_000;

beforeEach(() => {
  supabase = fakeSupabase();
  clock = 1_000_000;
  live = new LiveConnection(supabase, { now: () => clock, document, window });
});
afterEach(() => live.destroy());

describe('getLiveConnection', () => {
  it('returns one connection per supabase client', () => {
    const other = fakeSupabase();
    expect(getLiveConnection(supabase)).toBe(getLiveConnection(supabase));
    expect(getLiveConnection(other)).not.toBe(getLiveConnection(supabase));
  });
});

describe('subscribe', () => {
  it('sets the token on Realtime before it joins the private topic', async () => {
    live.subscribe('p1', {});
    await settle();
    expect(supabase.calls).toEqual(['setAuth:', 'channel:metrics:p1:true', 'subscribe:metrics:p1']);
  });

  it('shares one channel per project among its users and removes it with the last one', async () => {
    const offA = live.subscribe('p1', {});
    const offB = live.subscribe('p1', {});
    const offC = live.subscribe('p2', {});
    await settle();
    expect(supabase.channels.map((/** @type {any} */ c) => c.name)).toEqual(['metrics:p1', 'metrics:p2']);
    offA();
    expect(supabase.channels[0].removed).toBe(false);
    offB();
    expect(supabase.channels[0].removed).toBe(true);
    offC();
    expect(supabase.channels[1].removed).toBe(true);
    expect(supabase.listeners()).toBe(0);
  });

  it('hands each broadcast to every user of the topic and only to them', async () => {
    const a = { rollup: vi.fn(), alert: vi.fn() };
    const b = { rollup: vi.fn() };
    live.subscribe('p1', a);
    live.subscribe('p2', b);
    await settle();
    supabase.channels[0].broadcast('rollup', { seq: 1 });
    supabase.channels[0].broadcast('alert', { transitions: [] });
    expect(a.rollup).toHaveBeenCalledWith({ seq: 1 });
    expect(a.alert).toHaveBeenCalledOnce();
    expect(b.rollup).not.toHaveBeenCalled();
    expect(live.lastDataAt).toBe(clock);
  });

  it('asks every user to resync after each SUBSCRIBED, the first and every rejoin', async () => {
    const resync = vi.fn();
    live.subscribe('p1', { resync });
    await settle();
    const channel = supabase.channels[0];
    channel.status('SUBSCRIBED');
    channel.status('CHANNEL_ERROR');
    channel.status('SUBSCRIBED');
    expect(resync).toHaveBeenCalledTimes(2);
  });

  it('gives a user who joins an already subscribed topic its own resync', async () => {
    live.subscribe('p1', {});
    await settle();
    supabase.channels[0].status('SUBSCRIBED');
    const resync = vi.fn();
    live.subscribe('p1', { resync });
    await settle();
    expect(resync).toHaveBeenCalledOnce();
  });
});

describe('tokens and visibility', () => {
  it('passes every refreshed token to Realtime', async () => {
    live.subscribe('p1', {});
    await settle();
    supabase.emitAuth('TOKEN_REFRESHED', { access_token: 'token-2' });
    supabase.emitAuth('SIGNED_OUT', null);
    expect(supabase.calls).toContain('setAuth:token-2');
    expect(supabase.calls.filter((/** @type {string} */ c) => c.startsWith('setAuth'))).toHaveLength(2);
  });

  it('resyncs subscribed topics when a hidden tab becomes visible', async () => {
    const resync = vi.fn();
    live.subscribe('p1', { resync });
    await settle();
    supabase.channels[0].status('SUBSCRIBED');
    const visibility = vi.spyOn(document, 'visibilityState', 'get');
    visibility.mockReturnValue('hidden');
    document.dispatchEvent(new Event('visibilitychange'));
    visibility.mockReturnValue('visible');
    document.dispatchEvent(new Event('visibilitychange'));
    visibility.mockRestore();
    expect(resync).toHaveBeenCalledTimes(2); // SUBSCRIBED, then visible (not hidden)
  });
});

describe('status', () => {
  it('goes connecting -> live -> reconnecting -> offline -> live', async () => {
    live.subscribe('p1', {});
    await settle();
    expect(live.status).toBe('connecting');
    const channel = supabase.channels[0];
    channel.status('SUBSCRIBED');
    expect(live.status).toBe('live');
    channel.status('CHANNEL_ERROR');
    expect(live.status).toBe('reconnecting');
    clock += OFFLINE_AFTER_MS;
    live.updateStatus();
    expect(live.status).toBe('offline');
    channel.status('SUBSCRIBED');
    expect(live.status).toBe('live');
  });

  it('is live only when every topic is subscribed', async () => {
    live.subscribe('p1', {});
    live.subscribe('p2', {});
    await settle();
    supabase.channels[0].status('SUBSCRIBED');
    expect(live.status).not.toBe('live');
    supabase.channels[1].status('SUBSCRIBED');
    expect(live.status).toBe('live');
  });
});

describe('a channel the server closed', () => {
  it('is replaced by a new channel after a backoff, and the new join resyncs', async () => {
    vi.useFakeTimers();
    try {
      const resync = vi.fn();
      live.subscribe('p1', { resync });
      await vi.advanceTimersByTimeAsync(0);
      supabase.channels[0].status('SUBSCRIBED');
      supabase.channels[0].status('CLOSED');
      expect(live.status).toBe('reconnecting');
      await vi.advanceTimersByTimeAsync(1_000);
      expect(supabase.channels[0].removed).toBe(true);
      expect(supabase.channels).toHaveLength(2);
      supabase.channels[0].status('SUBSCRIBED'); // the old channel no longer counts
      expect(resync).toHaveBeenCalledOnce();
      supabase.channels[1].status('SUBSCRIBED');
      expect(resync).toHaveBeenCalledTimes(2);
      expect(live.status).toBe('live');
    } finally {
      vi.useRealTimers();
    }
  });

  it('asks for a new token when a join is refused for its token, at most every 10 s', async () => {
    live.subscribe('p1', {});
    await settle();
    const channel = supabase.channels[0];
    channel.status('CHANNEL_ERROR', new Error('Unauthorized: You do not have permissions to read from this Channel topic'));
    await settle();
    expect(supabase.calls.slice(-2)).toEqual(['refreshSession', 'setAuth:token-fresh']);
    channel.status('CHANNEL_ERROR', new Error('Unauthorized'));
    channel.status('CHANNEL_ERROR', new Error('socket closed')); // not about the token
    await settle();
    expect(supabase.calls.filter((/** @type {string} */ c) => c === 'refreshSession')).toHaveLength(1);
    clock += 10_000;
    channel.status('CHANNEL_ERROR', new Error('Unauthorized'));
    await settle();
    expect(supabase.calls.filter((/** @type {string} */ c) => c === 'refreshSession')).toHaveLength(2);
  });
});
