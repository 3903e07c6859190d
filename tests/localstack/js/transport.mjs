// The WebSocket class supabase-js should use here. Node 22+ has a working global WebSocket; Node 20's
// (behind --experimental-websocket) never fires 'close' after a refused connection, so supabase-js would
// never reconnect. For Node < 22 supabase-js documents passing a transport: we pass the `ws` package.
import { WebSocket as WsWebSocket } from 'ws'

const major = Number(process.versions.node.split('.')[0])
export const BaseWebSocket = major >= 22 && typeof globalThis.WebSocket === 'function' ? globalThis.WebSocket : WsWebSocket
