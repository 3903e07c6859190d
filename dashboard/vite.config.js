import { sveltekit } from '@sveltejs/kit/vite';
import { svelteTesting } from '@testing-library/svelte/vite';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [sveltekit(), svelteTesting()],
  server: {
    // `vite dev`: the HTTP service of a local stack answers /api (meshhook-metrics status -o env)
    proxy: { '/api': process.env.METRICS_API_URL ?? 'http://127.0.0.1:54330' }
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.js'],
    setupFiles: ['./vitest-setup.js'],
    sequence: { shuffle: false }
  }
});
