// How every browser run of the project starts Debian's Chromium (the e2e tests, the MeshHook-shaped app's
// render check, the dashboard benchmark): headless, as root in CI (no sandbox), and without the background
// traffic this machine's closed network would refuse (component updates, sync, QUIC, first-run checks).
export const CHROMIUM_PATH = process.env.E2E_CHROMIUM ?? process.env.CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync'
];
