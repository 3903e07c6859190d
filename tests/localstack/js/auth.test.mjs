// Sign-in conformance with the official supabase-js: password sign-in, refresh, sign-out, errors.
// Driven by tests/localstack/test_auth_clients.py, which starts a gateway, adds a user and passes env.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createClient } from '@supabase/supabase-js'
import { BaseWebSocket } from './transport.mjs'

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run this through tests/localstack/test_auth_clients.py`)
  return value
}
const URL_ = env('GATEWAY_URL')
const ANON = env('ANON_KEY')
const EMAIL = env('EMAIL')
const PASSWORD = env('PASSWORD')
const PROJECT = env('PROJECT_ID')

const client = () =>
  createClient(URL_, ANON, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: BaseWebSocket },
  })

test('signInWithPassword gives a session whose token calls the Data API as the user', async () => {
  const supabase = client()
  const { data, error } = await supabase.auth.signInWithPassword({ email: EMAIL, password: PASSWORD })
  assert.equal(error, null)
  assert.equal(data.user.email, EMAIL)
  assert.equal(data.session.token_type, 'bearer')
  assert.ok(data.session.expires_at > Date.now() / 1000)
  const { data: user } = await supabase.auth.getUser()
  assert.equal(user.user.id, data.user.id)
  // ingest needs a member's token (the anon key is refused): supabase-js now sends the session's
  const now = Date.now() / 1000
  const batch = {
    project_id: PROJECT,
    source: 'supabase-js',
    batch_id: `js-${Date.now()}`,
    points: [{ name: 'signin_js_total', kind: 'counter', labels: {}, ts: now, count: 1, sum: 1 }],
  }
  const { data: accepted, error: rpcError } = await supabase.schema('metrics').rpc('ingest', { batch })
  assert.equal(rpcError, null)
  assert.equal(accepted.status, 'accepted')
  const { error: anonError } = await client().schema('metrics').rpc('ingest', { batch })
  assert.equal(anonError.code, '42501')
  await supabase.auth.signOut()
})

test('refreshSession rotates the refresh token; the used one is refused', async () => {
  const supabase = client()
  const { data: first, error } = await supabase.auth.signInWithPassword({ email: EMAIL, password: PASSWORD })
  assert.equal(error, null)
  const events = []
  supabase.auth.onAuthStateChange((event) => events.push(event))
  const { data: second, error: refreshError } = await supabase.auth.refreshSession()
  assert.equal(refreshError, null)
  assert.notEqual(second.session.refresh_token, first.session.refresh_token)
  assert.ok(events.includes('TOKEN_REFRESHED'))
  const { error: reused } = await client().auth.refreshSession({ refresh_token: first.session.refresh_token })
  assert.equal(reused.status, 400)
  assert.equal(reused.code, 'refresh_token_already_used')
})

test('signOut revokes the session: its refresh token is refused', async () => {
  const supabase = client()
  const { data } = await supabase.auth.signInWithPassword({ email: EMAIL, password: PASSWORD })
  const { error } = await supabase.auth.signOut()
  assert.equal(error, null)
  const { data: after } = await supabase.auth.getSession()
  assert.equal(after.session, null)
  const { error: refused } = await client().auth.refreshSession({ refresh_token: data.session.refresh_token })
  assert.equal(refused.code, 'refresh_token_not_found')
})

test('wrong password and unknown email are the same invalid_credentials error', async () => {
  for (const [email, password] of [
    [EMAIL, 'wrong password'],
    [`ghost-${Date.now()}@example.com`, PASSWORD],
  ]) {
    const { data, error } = await client().auth.signInWithPassword({ email, password })
    assert.equal(data.session, null)
    assert.equal(error.name, 'AuthApiError')
    assert.equal(error.status, 400)
    assert.equal(error.code, 'invalid_credentials')
    assert.equal(error.message, 'Invalid login credentials')
  }
})
