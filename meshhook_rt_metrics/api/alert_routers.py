"""Every router of the alerting endpoints (/api/metrics/alerts...), for the app factory to include.

One list, so that a new alerting concept is a new router module added here, not a change of the app.
"""

from __future__ import annotations

from fastapi import APIRouter

from meshhook_rt_metrics.api import alert_state, alerts, mute_windows

# the rules' typed /{rule_id:uuid} paths never take the fixed paths of the others, so the order is free
ALERT_ROUTERS: tuple[APIRouter, ...] = (alerts.router, mute_windows.router, alert_state.router)
