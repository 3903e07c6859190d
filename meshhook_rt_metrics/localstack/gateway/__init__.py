"""A local Supabase-compatible gateway: API keys, Data API RPC, Realtime and the edge-function host.

One ASGI server (default 127.0.0.1:54321) that the official clients cannot tell apart from Supabase for
the parts this product uses. See docs/localstack.md for what is implemented and what differs.
"""
