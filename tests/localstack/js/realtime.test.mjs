// Realtime conformance with the official supabase-js (newest 2.x, default protocol vsn 2.0.0).
// Driven by tests/localstack/test_supabase_js.py, which starts a gateway and passes its settings in env.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac, randomUUID } from 'node:crypto'
import { createClient } from '@supabase/supabase-js'
import { BaseWebSocket } from './transport.mjs'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run this through tests/localstack/test_supabase_js.py`)
  return value
}
const URL_ = env('GATEWAY_URL')
const ANON = env('ANON_KEY')
const SERVICE = env('SERVICE_KEY')
const SECRET = env('JWT_SECRET')
const PROJECT = env('PROJECT_ID')
const MEMBER_TOKEN = env('MEMBER_TOKEN')
const IDLE_MS = Number(env('IDLE_TIMEOUT_MS'))
const WAIT = 15000

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
function sign(claims) {
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`
}
function userToken(sub, expiresInSeconds) {
  const now = Math.floor(Date.now() / 1000)
  return sign({ aud: 'authenticated', role: 'authenticated', sub, iat: now, exp: now + expiresInSeconds })
}

// A WebSocket that records what a client sends and how many sockets it opened.
function recordingTransport() {
  const record = { sent: [], opened: 0 }
  class RecordingWebSocket extends BaseWebSocket {
    constructor(...args) {
      super(...args)
      record.opened += 1
    }
    send(data) {
      record.sent.push(data)
      return super.send(data)
    }
  }
  return { record, transport: RecordingWebSocket }
}

const clients = []
// A user's token is given as an accessToken callback: supabase-js (without a signed-in session) would
// otherwise replace a token passed to realtime.setAuth() with the anon key when it (re)connects.
function client(options = {}, token = null) {
  const supabase = createClient(URL_, ANON, {
    ...(token ? { accessToken: async () => token } : { auth: { persistSession: false, autoRefreshToken: false } }),
    realtime: { transport: BaseWebSocket, ...options },
  })
  clients.push(supabase)
  return supabase
}

// As Supabase documents for private channels: resolve the token before subscribing.
async function userClient(token, options = {}) {
  const supabase = client(options, token)
  await supabase.realtime.setAuth()
  return supabase
}
after(async () => {
  for (const supabase of clients) await supabase.removeAllChannels()
  for (const supabase of clients) supabase.realtime.disconnect()
})

function waitFor(predicate, what, timeout = WAIT) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeout)
    const poll = setInterval(() => {
      const value = predicate()
      if (value) {
        clearTimeout(timer)
        clearInterval(poll)
        resolve(value)
      }
    }, 10)
  })
}

function subscribe(channel) {
  const states = []
  channel.subscribe((status, err) => states.push({ status, err }))
  return { states, ready: waitFor(() => states.find((s) => s.status !== 'CLOSED'), 'subscribe') }
}

test('uses protocol 2.0.0 by default', () => {
  assert.equal(client().realtime.vsn, '2.0.0')
})

test('member receives the database broadcast of an ingest on the private project topic', async () => {
  const supabase = await userClient(MEMBER_TOKEN)
  const got = []
  const channel = supabase.channel(`metrics:${PROJECT}`, { config: { private: true } })
  channel.on('broadcast', { event: 'rollup' }, (message) => got.push(message))
  const { ready } = subscribe(channel)
  assert.equal((await ready).status, 'SUBSCRIBED')

  const service = createClient(URL_, SERVICE, { auth: { persistSession: false }, realtime: { transport: BaseWebSocket } })
  const batch = {
    project_id: PROJECT, source: 'supabase-js-test', batch_id: randomUUID(),
    points: [{ name: 'meshhook_queue_messages', kind: 'gauge', labels: { queue: 'q', state: 'ready' },
      ts: Date.now() / 1000, count: 1, sum: 7, min: 7, max: 7, last: 7 }],
  }
  const { data, error } = await service.schema('metrics').rpc('ingest', { batch })
  assert.equal(error, null)
  assert.equal(data.status, 'accepted')
  const message = await waitFor(() => got[0], 'rollup broadcast')
  assert.equal(message.event, 'rollup')
  assert.equal(message.payload.project_id, PROJECT)
  assert.ok(message.meta.id)
})

test('non-member is refused with CHANNEL_ERROR', async () => {
  const supabase = await userClient(userToken(randomUUID(), 600))
  const { ready } = subscribe(supabase.channel(`metrics:${PROJECT}`, { config: { private: true } }))
  const state = await ready
  assert.equal(state.status, 'CHANNEL_ERROR')
  assert.match(String(state.err), /Unauthorized/)
})

test('broadcast goes as a binary frame to another client; self and ack', async () => {
  const topic = `js-${randomUUID()}`
  const { record, transport } = recordingTransport()
  const a = client({ transport })
  const b = client()
  const senderChannel = a.channel(topic, { config: { broadcast: { self: true, ack: true } } })
  const receiverChannel = b.channel(topic)
  const mine = []
  const theirs = []
  senderChannel.on('broadcast', { event: '*' }, (m) => mine.push(m))
  receiverChannel.on('broadcast', { event: '*' }, (m) => theirs.push(m))
  assert.equal((await subscribe(senderChannel).ready).status, 'SUBSCRIBED')
  assert.equal((await subscribe(receiverChannel).ready).status, 'SUBSCRIBED')

  const status = await senderChannel.send({ type: 'broadcast', event: 'cursor', payload: { x: 1, y: 'ü' } })
  assert.equal(status, 'ok') // with ack: true this waits for the server's reply
  const received = await waitFor(() => theirs[0], 'broadcast on the second client')
  assert.deepEqual(received.payload, { x: 1, y: 'ü' })
  assert.equal(received.event, 'cursor')
  await waitFor(() => mine[0], 'self delivery')
  assert.deepEqual(mine[0].payload, { x: 1, y: 'ü' })
  assert.ok(record.sent.some((f) => f instanceof ArrayBuffer || ArrayBuffer.isView(f)), 'sent as a binary frame')

  // a binary payload travels as such
  const raw = new Uint8Array([0, 1, 2, 255]).buffer
  await senderChannel.send({ type: 'broadcast', event: 'raw', payload: raw })
  const rawReceived = await waitFor(() => theirs.find((m) => m.event === 'raw'), 'binary payload')
  assert.deepEqual([...new Uint8Array(rawReceived.payload)], [0, 1, 2, 255])
})

test('without self the sender does not receive its own broadcast', async () => {
  const topic = `js-${randomUUID()}`
  const a = client()
  const b = client()
  const mine = []
  const theirs = []
  const ca = a.channel(topic).on('broadcast', { event: '*' }, (m) => mine.push(m))
  const cb = b.channel(topic).on('broadcast', { event: '*' }, (m) => theirs.push(m))
  await subscribe(ca).ready
  await subscribe(cb).ready
  await ca.send({ type: 'broadcast', event: 'one', payload: {} })
  await ca.send({ type: 'broadcast', event: 'two', payload: {} })
  await waitFor(() => theirs.length === 2, 'two broadcasts')
  assert.deepEqual(theirs.map((m) => m.event), ['one', 'two'])
  assert.equal(mine.length, 0)
})

test('heartbeats keep the socket open past the idle timeout', async () => {
  const { record, transport } = recordingTransport()
  const supabase = client({ transport, heartbeatIntervalMs: Math.max(200, Math.floor(IDLE_MS / 4)) })
  const beats = []
  supabase.realtime.onHeartbeat((status) => beats.push(status))
  const topic = `idle-${randomUUID()}`
  const got = []
  const channel = supabase.channel(topic).on('broadcast', { event: '*' }, (m) => got.push(m))
  assert.equal((await subscribe(channel).ready).status, 'SUBSCRIBED')
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS * 2.5))
  assert.equal(record.opened, 1, 'the same socket, never reconnected')
  assert.equal(supabase.realtime.isConnected(), true)
  assert.ok(beats.filter((s) => s === 'ok').length >= 2, `heartbeats answered: ${beats}`)
  const response = await fetch(`${URL_}/realtime/v1/api/broadcast`, {
    method: 'POST', headers: { apikey: ANON, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ topic, event: 'still-here', payload: {} }] }),
  })
  assert.equal(response.status, 202)
  await waitFor(() => got[0], 'broadcast after the idle period')
})

test('expired token: system error, then the channel is closed', async () => {
  const supabase = await userClient(userToken(randomUUID(), 2))
  const system = []
  const channel = supabase.channel(`expiring-${randomUUID()}`, { config: { private: false } })
  channel.on('system', {}, (m) => system.push(m))
  const { states, ready } = subscribe(channel)
  assert.equal((await ready).status, 'SUBSCRIBED')
  const error = await waitFor(() => system.find((m) => m.status === 'error'), 'system error')
  assert.match(error.message, /Token has expired/)
  await waitFor(() => states.find((s) => s.status === 'CLOSED'), 'channel closed')
})
