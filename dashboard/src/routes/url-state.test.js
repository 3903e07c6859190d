import { describe, expect, it } from 'vitest';
import { readUrl, writeUrl } from './url-state.js';

describe('the page state in the URL', () => {
  it('round-trips project, view and range', () => {
    const state = { project: 'p1', view: /** @type {const} */ ('rules'), range: { from: 100, to: 200 } };
    expect(readUrl(new URL(`http://x/dashboard/${writeUrl(state)}`))).toEqual(state);
  });

  it('falls back to the metrics view and the last hour for unknown or missing values', () => {
    expect(readUrl(new URL('http://x/dashboard/?view=admin&last=nonsense'))).toEqual({
      project: null, view: 'metrics', range: { last: '1h' }
    });
  });

  it('leaves the default view out of the URL', () => {
    expect(writeUrl({ project: 'p1', view: 'metrics', range: { last: '24h' } })).toBe('?project=p1&last=24h');
  });
});
