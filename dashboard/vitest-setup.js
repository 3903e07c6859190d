// jsdom has no canvas, ResizeObserver or matchMedia; uPlot and the panels need them to mount.
import { vi } from 'vitest';

globalThis.ResizeObserver ??= class {
  observe() {}
  unobserve() {}
  disconnect() {}
};
window.matchMedia ??= (query) => ({
  matches: false,
  media: query,
  addEventListener() {},
  removeEventListener() {},
  addListener() {},
  removeListener() {},
  onchange: null,
  dispatchEvent: () => false
});
HTMLCanvasElement.prototype.getContext ??= vi.fn();
