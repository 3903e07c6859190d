"""Supabase Realtime (Broadcast, private channels, Broadcast from Database) over Phoenix channels."""
