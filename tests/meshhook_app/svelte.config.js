import adapter from '@sveltejs/adapter-node';

/**
 * Shaped like MeshHook's apps/web: SvelteKit 2 on adapter-node (`node build`, env PORT / ORIGIN).
 * @type {import('@sveltejs/kit').Config}
 */
const config = {
  kit: {
    adapter: adapter()
  }
};

export default config;
