// A long-running supabase-js subscriber for the gateway restart test: prints one JSON line per event.
// env: GATEWAY_URL, ANON_KEY, TOKEN, TOPIC, PRIVATE ("1"/"0").
import { createClient } from '@supabase/supabase-js'
import { BaseWebSocket } from './transport.mjs'

const say = (record) => process.stdout.write(JSON.stringify(record) + '\n')
// The user's token comes from an accessToken callback (as with third-party auth), so that supabase-js
// uses it again after reconnecting; a token given to realtime.setAuth() would be replaced by the anon key.
const supabase = createClient(process.env.GATEWAY_URL, process.env.ANON_KEY, {
  accessToken: async () => process.env.TOKEN,
  realtime: {
    transport: BaseWebSocket,
    ...(process.env.DEBUG ? { logger: (kind, msg) => say({ kind: 'log', log: `${kind} ${msg}`.replace(/apikey=[^&]+/, 'apikey=...') }) } : {}),
  },
})
await supabase.realtime.setAuth() // resolve the token before joining, as Supabase documents
supabase
  .channel(process.env.TOPIC, { config: { private: process.env.PRIVATE === '1' } })
  .on('broadcast', { event: '*' }, (message) => say({ kind: 'broadcast', event: message.event, payload: message.payload }))
  .subscribe((status, err) => say({ kind: 'status', status, error: err ? String(err) : null }))
process.stdin.on('end', () => process.exit(0)) // the test closes stdin to stop us
process.stdin.resume()
