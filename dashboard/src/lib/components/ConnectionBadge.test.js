import { render, screen } from '@testing-library/svelte';
import { flushSync } from 'svelte';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import ConnectionBadge from './ConnectionBadge.svelte';
import { connectionState } from './connection.js';

describe('connectionState', () => {
  const now = 1_000_000;
  it('is green only when live and fresh', () => {
    expect(connectionState({ status: 'live', lastDataAt: now - 2000 }, now).level).toBe('ok');
    expect(connectionState({ status: 'live', lastDataAt: now - 6000 }, now)).toMatchObject({ level: 'warning', stale: true });
    expect(connectionState({ status: 'live', lastDataAt: null }, now).level).toBe('warning');
  });
  it('is red past 30 s or offline, amber while reconnecting', () => {
    expect(connectionState({ status: 'live', lastDataAt: now - 31_000 }, now).level).toBe('critical');
    expect(connectionState({ status: 'reconnecting', lastDataAt: now - 31_000 }, now).level).toBe('critical');
    expect(connectionState({ status: 'reconnecting', lastDataAt: now - 1000 }, now).level).toBe('warning');
    expect(connectionState({ status: 'offline', lastDataAt: now }, now)).toMatchObject({ level: 'critical', text: 'Offline' });
    expect(connectionState({ status: 'connecting', lastDataAt: null }, now)).toMatchObject({ level: 'neutral', text: 'Connecting…' });
  });
  it('says how old the data is', () => {
    expect(connectionState({ status: 'live', lastDataAt: now - 12_500 }, now).age).toBe('updated 12 s ago');
    expect(connectionState({ status: 'live', lastDataAt: now - 125_000 }, now).age).toBe('updated 2 min ago');
  });
});

describe('ConnectionBadge', () => {
  beforeEach(() => vi.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => vi.useRealTimers());

  it('ticks every second and turns amber, then red, as data ages', () => {
    const live = { status: 'live', lastDataAt: 1_000_000 };
    render(ConnectionBadge, { props: { live } });
    const status = screen.getByRole('status');
    expect(status.getAttribute('aria-live')).toBe('polite');
    const badge = /** @type {HTMLElement} */ (status.closest('.mh-badge'));
    expect(badge.dataset.level).toBe('ok');
    expect(badge.textContent).toContain('Live');
    expect(badge.textContent).toContain('updated 0 s ago');

    vi.advanceTimersByTime(6000);
    flushSync();
    expect(badge.dataset.level).toBe('warning');
    expect(badge.textContent).toContain('updated 6 s ago');
    expect(status.textContent).toBe('Live (stale)'); // said in words, not only by colour

    vi.advanceTimersByTime(25_000);
    flushSync();
    expect(badge.dataset.level).toBe('critical');
  });

  it('follows the status of a reactive live object', async () => {
    const { rerender } = render(ConnectionBadge, { props: { live: { status: 'reconnecting', lastDataAt: 1_000_000 } } });
    expect(screen.getByRole('status').textContent).toContain('Reconnecting…');
    await rerender({ live: { status: 'offline', lastDataAt: 1_000_000 } });
    expect(screen.getByRole('status').textContent).toContain('Offline');
    expect(/** @type {HTMLElement} */ (screen.getByRole('status').closest('.mh-badge')).dataset.level).toBe('critical');
  });
});
