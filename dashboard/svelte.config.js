import adapter from '@sveltejs/adapter-static';

/**
 * The standalone admin page is a static single-page app served by the metrics HTTP service under
 * /dashboard (same origin as /api/metrics, so no CORS); `src/lib` is the package MeshHook installs.
 * @type {import('@sveltejs/kit').Config}
 */
const config = {
  kit: {
    adapter: adapter({ pages: 'build', assets: 'build', fallback: 'index.html', strict: true }),
    paths: { base: '/dashboard' }
  }
};

export default config;
