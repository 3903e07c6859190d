"""The alert worker: evaluates alert rules with the data plane's SQL and delivers notifications.

The folder is the architecture (as Alertmanager's packages): ``evaluation`` (asking SQL to evaluate a
project's rules), ``lease`` (who owns a project's evaluation), ``subscription`` (the live topics, realtime-py),
``delivery`` (the outbox: claim, send, record), ``notify/`` (one module per receiver kind), ``ssrf`` (the guard
every outgoing request passes), ``worker`` (the loops tied together), ``settings``.
The rules themselves (values, state machine, silences, mute windows, what is queued) live in SQL:
migration ``20261204000100_metrics_alert_worker.sql``.
"""
