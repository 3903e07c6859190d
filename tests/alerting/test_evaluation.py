"""Alert rule semantics through the worker's SQL (``metrics.evaluate_alerts`` and the outbox functions).

Each test builds a project with data at chosen past minutes (data time is the project's newest minute, so a
test moves time by sending into a later minute) and calls what the worker calls, as the service role.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.alerting.scenario import OWNER, Scenario
from tests.support import TestDatabase, counter

ERRORS = "meshhook_webhook_failures_total"
DEPTH = "meshhook_queue_messages"
ROUTE = {"route": "/api/hooks/[slug]"}


@pytest.fixture
def s(fresh_db: TestDatabase) -> Iterator[Scenario]:
    with psycopg.connect(fresh_db.url, autocommit=True) as conn:
        conn.execute("set role service_role")
        yield Scenario(conn)


# -- partial minutes ---------------------------------------------------------------------------------------
def test_a_counter_sum_above_the_threshold_fires_on_the_open_minute(s: Scenario) -> None:
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    assert s.evaluate() == [("route=/api/hooks/[slug]", "inactive", "firing")]


@pytest.mark.parametrize(
    ("agg", "metric_kind"),
    [("avg", "gauge"), ("rate", "counter"), ("p99", "histogram"), ("max", "gauge-below")],
)
def test_averages_rates_quantiles_wait_for_the_settled_minute(
    s: Scenario, agg: str, metric_kind: str
) -> None:
    op, threshold = (">", 3.0) if metric_kind != "gauge-below" else ("<", 3.0)
    s.rule(metric="m", agg=agg, group_by=[], window_length="1 minute", op=op, threshold=threshold)
    if metric_kind == "histogram":
        s.observe("m", [5.0, 6.0, 7.0], {}, minute=0)
    elif metric_kind == "counter":
        s.count("m", 600, {}, minute=0)  # 10/s over the minute
    else:
        s.gauge("m", 5.0 if metric_kind == "gauge" else 1.0, {}, minute=0)
    assert s.evaluate() == [], "the open minute decides only monotone cases"
    s.tick(minute=1)
    assert s.evaluate() == [("-", "inactive", "firing")]


def test_min_falling_below_fires_on_the_open_minute_but_max_falling_below_does_not(s: Scenario) -> None:
    low = s.rule(metric=DEPTH, agg="min", group_by=[], window_length="1 minute", op="<", threshold=2)
    s.rule(metric=DEPTH, agg="max", group_by=[], window_length="1 minute", op="<", threshold=2)
    s.gauge(DEPTH, 1, {}, minute=0)
    report = s.conn.execute(
        "select metrics.evaluate_alerts(%s, %s, %s)", (s.project, OWNER, s.epoch())
    ).fetchone()
    assert report is not None
    assert [t["rule_id"] for t in report[0]["transitions"]] == [str(low)]


def test_a_resolve_waits_until_the_minute_is_settled(s: Scenario) -> None:
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    s.tick(minute=1)  # minute 0 settled (still 5), minute 1 open and quiet
    assert s.evaluate() == []
    s.tick(minute=2)  # minute 1 settled: no increments in the window
    assert s.evaluate() == [("route=/api/hooks/[slug]", "firing", "resolved")]


def test_quiet_counters_are_zero_not_no_data(s: Scenario) -> None:
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute", no_data_policy="alerting")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    for minute in range(1, 12):
        s.tick(minute)
        s.evaluate()
    assert s.states() == {}  # resolved and forgotten (inactive groups of counters are not kept)


# -- for, keep_firing_for, hysteresis ---------------------------------------------------------------------------
def test_for_duration_counts_data_time(s: Scenario) -> None:
    s.rule(metric=DEPTH, agg="avg", group_by=[], window_length="1 minute", for_duration="2 minutes")
    for minute in range(0, 4):
        s.gauge(DEPTH, 10, {}, minute)
    s.tick(4)  # minutes 0..3 settled
    assert s.evaluate() == [("-", "inactive", "pending")]
    s.gauge(DEPTH, 10, {}, 5)
    assert s.evaluate() == []  # a minute of data time later: not yet
    s.gauge(DEPTH, 10, {}, 6)
    assert s.evaluate() == [("-", "pending", "firing")]


def test_pending_goes_back_to_inactive_without_notifying(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=DEPTH, agg="avg", group_by=[], window_length="1 minute", for_duration="5 minutes")
    s.gauge(DEPTH, 10, {}, 0)
    s.tick(1)
    assert s.evaluate() == [("-", "inactive", "pending")]
    s.gauge(DEPTH, 1, {}, 1)
    s.tick(2)
    assert s.evaluate() == [("-", "pending", "inactive")]
    assert s.outbox() == []


def test_keep_firing_for_recovers_without_a_new_notice(s: Scenario) -> None:
    hook = s.receiver()
    s.rule(
        [hook], metric=DEPTH, agg="avg", group_by=[], window_length="1 minute", keep_firing_for="3 minutes"
    )
    values = [10, 1, 10, 1, 1, 1, 1]
    seen = []
    for minute, value in enumerate(values):
        s.gauge(DEPTH, value, {}, minute)
        seen += [(prev, state) for _, prev, state in s.evaluate()]
    s.tick(len(values))
    seen += [(prev, state) for _, prev, state in s.evaluate()]
    assert seen == [
        ("inactive", "firing"),
        ("firing", "recovering"),
        ("recovering", "firing"),
        ("firing", "recovering"),
        ("recovering", "resolved"),
    ]
    assert s.outbox() == [("firing", "queued"), ("resolved", "queued")]


def test_hysteresis_fires_above_the_threshold_and_resolves_below_the_resolve_threshold(s: Scenario) -> None:
    s.rule(metric=DEPTH, agg="avg", group_by=[], window_length="1 minute", threshold=5, resolve_threshold=3)
    states = []
    for minute, value in enumerate([6, 4, 5, 2.9, 4]):
        s.gauge(DEPTH, value, {}, minute)
        s.tick(minute + 1, 1)
        states += [state for _, _, state in s.evaluate()]
    assert states == ["firing", "resolved"]  # 4 and 5 hold it; 2.9 resolves; 4 does not fire again


# -- no data -------------------------------------------------------------------------------------------------
def nodata_run(s: Scenario, policy: str, **rule: Any) -> list[tuple[str, str]]:
    s.rule(
        metric=DEPTH, agg="avg", group_by=["queue"], window_length="1 minute", no_data_policy=policy, **rule
    )
    s.gauge(DEPTH, 10, {"queue": "a"}, 0)
    s.tick(1)
    seen = [(p, st) for _, p, st in s.evaluate()]
    for minute in range(2, 7):  # the queue stops reporting; the project's other series go on
        s.tick(minute)
        seen += [(p, st) for _, p, st in s.evaluate()]
    return seen


def test_no_data_ok_resolves_after_no_data_after_of_data_time(s: Scenario) -> None:
    assert nodata_run(s, "ok", no_data_after="3 minutes") == [("inactive", "firing"), ("firing", "resolved")]
    events = s.conn.execute(
        "select at from metrics.alert_events where project_id = %s and state = 'resolved'", (s.project,)
    ).fetchall()
    assert events[0][0].timestamp() == s.at(5)  # last data at minute 2 (data time), + 3 minutes


def test_no_data_keep_last_keeps_firing(s: Scenario) -> None:
    assert nodata_run(s, "keep_last", no_data_after="2 minutes") == [("inactive", "firing")]
    assert s.states() == {"queue=a": "firing"}


def test_no_data_state_notifies_once_and_resolves_when_data_returns(s: Scenario) -> None:
    hook = s.receiver()
    s.rule(
        [hook],
        metric=DEPTH,
        agg="avg",
        group_by=["queue"],
        window_length="1 minute",
        no_data_policy="nodata",
        no_data_after="2 minutes",
        threshold=100,
    )
    s.gauge(DEPTH, 1, {"queue": "a"}, 0)
    s.tick(1)
    seen = [(p, st) for _, p, st in s.evaluate()]
    for minute in range(2, 6):
        s.tick(minute)
        seen += [(p, st) for _, p, st in s.evaluate()]
    s.gauge(DEPTH, 1, {"queue": "a"}, 6)
    s.tick(7)
    seen += [(p, st) for _, p, st in s.evaluate()]
    assert seen == [("inactive", "nodata"), ("nodata", "resolved")]
    assert s.outbox() == [("nodata", "queued"), ("resolved", "queued")]


def test_no_data_alerting_fires(s: Scenario) -> None:
    assert nodata_run(s, "alerting", threshold=100, no_data_after="2 minutes") == [("inactive", "firing")]


def test_no_data_is_decided_on_data_time_not_on_the_clock(s: Scenario) -> None:
    s.rule(
        metric=DEPTH,
        agg="avg",
        group_by=[],
        window_length="1 minute",
        no_data_policy="alerting",
        threshold=100,
        no_data_after="2 minutes",
    )
    s.gauge(DEPTH, 1, {}, 0)
    s.tick(1)
    s.evaluate()
    # the data is two hours old by the clock, but the project sent nothing since: no "no data" yet
    for _ in range(3):
        assert s.evaluate() == []


# -- outbox, silences, mute windows, grouping ----------------------------------------------------------------------
def test_a_transition_and_its_notifications_commit_together_once_per_receiver(s: Scenario) -> None:
    a, b = s.receiver("a"), s.receiver("b")
    s.rule([a, b], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    s.evaluate()  # nothing new
    assert s.outbox() == [("firing", "queued"), ("firing", "queued")]
    messages = s.claim()
    assert sorted(m["body"]["receiver"] for m in messages) == ["a", "b"]
    assert {m["body"]["alerts"][0]["fingerprint"] for m in messages} == {
        s.conn.execute(
            "select fingerprint from metrics.alert_instances where project_id = %s", (s.project,)
        ).fetchone()[0]  # type: ignore[index]
    }
    assert s.claim() == []  # claimed: locked for the worker that holds them


def test_annotations_are_rendered_into_the_notification(s: Scenario) -> None:
    hook = s.receiver()
    s.rule(
        [hook],
        metric=ERRORS,
        agg="sum",
        group_by=["route"],
        window_length="1 minute",
        threshold=3,
        annotations={"summary": "{{ labels.route }} failed {{ value }} times (> {{ threshold }})"},
    )
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    alert = s.claim()[0]["body"]["alerts"][0]
    assert alert["annotations"] == {"summary": "/api/hooks/[slug] failed 5 times (> 3)"}
    assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"


def test_a_silenced_transition_is_recorded_but_not_sent(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.conn.execute(
        "insert into metrics.alert_silences (project_id, matchers, ends_at) values (%s, %s, now() + interval '1 hour')",
        (s.project, psycopg.types.json.Jsonb([{"label": "route", "op": "=~", "value": "/api/hooks/.*"}])),
    )
    s.count(ERRORS, 5, ROUTE, minute=0)
    assert s.evaluate() == [("route=/api/hooks/[slug]", "inactive", "firing")]
    assert s.outbox() == [("firing", "silenced")]
    assert s.claim() == []


def test_a_mute_window_in_its_time_zone_mutes_notifications(s: Scenario) -> None:
    hook = s.receiver()
    rule = s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    # a window around the current local time of Asia/Tokyo, on the weekday it starts on there: a window
    # past midnight belongs to its start's weekday (metrics.alert_muted), so near Tokyo's midnight that is
    # yesterday's
    s.conn.execute(
        """insert into metrics.alert_mute_windows (project_id, rule_id, name, weekdays, start_time, end_time, time_zone)
           select %s, %s, 'maintenance',
             array[extract(isodow from (now() at time zone 'Asia/Tokyo') - interval '10 minutes')::smallint],
             ((now() at time zone 'Asia/Tokyo') - interval '10 minutes')::time,
             ((now() at time zone 'Asia/Tokyo') + interval '10 minutes')::time, 'Asia/Tokyo'""",
        (s.project, rule),
    )
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    assert s.outbox() == [("firing", "muted")]


def test_group_wait_delays_and_gathers_a_group(s: Scenario) -> None:
    hook = s.receiver()
    s.rule(
        [hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute", group_wait="1 hour"
    )
    s.count(ERRORS, 5, {"route": "/a"}, minute=0)
    s.count(ERRORS, 5, {"route": "/b"}, minute=0)
    s.evaluate()
    assert s.claim() == []  # not due for an hour
    s.conn.execute(
        "update metrics.alert_notifications set due_at = now() - interval '1 second' where project_id = %s",
        (s.project,),
    )
    messages = s.claim()
    assert len(messages) == 1
    assert sorted(a["labels"]["route"] for a in messages[0]["body"]["alerts"]) == ["/a", "/b"]


def test_a_new_alert_joining_a_notified_group_is_sent_at_once_with_the_others(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, {"route": "/a"}, minute=0)
    s.evaluate()
    first = s.claim()
    s.finish(first[0]["id"])
    s.count(ERRORS, 5, {"route": "/b"}, minute=0, second=40)
    s.evaluate()
    second = s.claim()
    assert [a["labels"]["route"] for a in second[0]["body"]["alerts"]] == ["/b", "/a"]  # the change first


def test_a_firing_group_repeats_after_repeat_interval_once(s: Scenario) -> None:
    hook = s.receiver()
    s.rule(
        [hook],
        metric=ERRORS,
        agg="sum",
        group_by=["route"],
        window_length="1 minute",
        repeat_interval="1 minute",
    )
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    s.finish(s.claim()[0]["id"])
    assert s.claim() == []
    s.conn.execute(
        "update metrics.alert_messages set created_at = now() - interval '2 minutes' where project_id = %s",
        (s.project,),
    )
    repeats = s.claim()
    kinds = s.conn.execute(
        "select kind from metrics.alert_messages where id = %s", (repeats[0]["id"],)
    ).fetchall()
    assert len(repeats) == 1 and kinds == [("repeat",)]
    assert repeats[0]["body"]["alerts"][0]["status"] == "firing"
    assert s.claim() == []


def test_delivery_retries_with_backoff_then_dead_letters(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.conn.execute("update metrics.config set alert_max_attempts = 2, alert_retry_base = '100 milliseconds'")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    message = s.claim()[0]
    assert s.finish(message["id"], False, status=503, error="HTTP 503") == "retry"
    assert s.finish(message["id"], False) == "stale"  # no longer claimed
    s.conn.execute(
        "update metrics.alert_messages set next_attempt_at = now() where id = %s", (message["id"],)
    )
    again = s.claim()
    assert again[0]["key"] == message["key"] and again[0]["attempt"] == 2
    assert s.finish(again[0]["id"], False, status=503, error="HTTP 503") == "dead"
    row = s.conn.execute(
        "select status, attempts, last_error from metrics.alert_messages where id = %s", (message["id"],)
    ).fetchone()
    assert row == ("dead", 2, "HTTP 503")


def test_retry_after_is_honoured(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    message = s.claim()[0]
    s.finish(message["id"], False, status=429, retry_after=120)
    wait = s.conn.execute(
        "select extract(epoch from next_attempt_at - now()) from metrics.alert_messages where id = %s",
        (message["id"],),
    ).fetchone()
    assert wait is not None and 115 < float(wait[0]) <= 120


# -- fencing, caps, restarts -----------------------------------------------------------------------------------
def test_a_worker_that_lost_its_lease_cannot_write(s: Scenario) -> None:
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    epoch = s.epoch()
    s.conn.execute(
        "update metrics.alert_leases set expires_at = now() - interval '1 second' where project_id = %s",
        (s.project,),
    )
    taken = dict(s.conn.execute("select * from metrics.claim_alert_leases('other')").fetchall())
    assert taken[s.project] == epoch + 1
    s.count(ERRORS, 5, ROUTE, minute=0)
    with pytest.raises(psycopg.Error) as lost:
        s.conn.execute("select metrics.evaluate_alerts(%s, %s, %s)", (s.project, OWNER, epoch))
    assert lost.value.sqlstate == "MHL01"
    assert s.states() == {} and s.outbox() == []


def test_groups_past_the_instance_cap_are_counted_not_tracked(s: Scenario) -> None:
    s.conn.execute("update metrics.projects set alert_max_instances = 2 where id = %s", (s.project,))
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    for route in ("/a", "/b", "/c"):
        s.count(ERRORS, 5, {"route": route}, minute=0)
    report = s.conn.execute(
        "select metrics.evaluate_alerts(%s, %s, %s)", (s.project, OWNER, s.epoch())
    ).fetchone()
    assert report is not None and report[0]["capped"] == 1 and len(s.states()) == 2


def test_evaluating_again_after_a_restart_changes_nothing(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=DEPTH, agg="avg", group_by=[], window_length="1 minute", for_duration="1 minute")
    s.gauge(DEPTH, 10, {}, 0)
    s.gauge(DEPTH, 10, {}, 1)
    s.tick(2)
    s.evaluate()
    before = s.conn.execute(
        "select * from metrics.alert_instances where project_id = %s", (s.project,)
    ).fetchall()
    s.conn.execute("select metrics.release_alert_leases(%s)", (OWNER,))  # the worker stopped
    assert s.evaluate() == []  # a new lease, the same state
    after = s.conn.execute(
        "select * from metrics.alert_instances where project_id = %s", (s.project,)
    ).fetchall()
    assert [r[:11] for r in after] == [r[:11] for r in before]


def test_a_rule_that_fired_on_a_minute_keeps_seeing_it_while_it_settles(s: Scenario) -> None:
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    assert s.evaluate() == [("route=/api/hooks/[slug]", "inactive", "firing")]
    # data time one second into minute 1: minute 0 has ended but is not settled yet (the settle delay)
    s.tick(1, second=0.5)
    s.written_at(1, 1)
    assert s.conn.execute("select metrics.alert_data_time(%s)", (s.project,)).fetchone()[
        0
    ].timestamp() == s.at(1, 1)  # type: ignore[index]
    assert s.evaluate() == []  # neither resolved from the quiet minute before it, nor from the new one
    s.tick(1, second=50)  # minute 1 goes on: minute 0 is settled, and still holds 5
    assert s.evaluate() == []
    s.tick(2)  # minute 1 settled: quiet
    assert s.evaluate() == [("route=/api/hooks/[slug]", "firing", "resolved")]


def test_a_burst_in_the_first_seconds_of_a_minute_fires_although_nothing_follows(s: Scenario) -> None:
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.tick(0)
    s.count(ERRORS, 5, ROUTE, minute=1, second=0.5)
    s.written_at(1, 1)
    # data time one second into minute 1: minute 0 is not settled, and minute 1 is where the burst is
    assert s.evaluate() == [("route=/api/hooks/[slug]", "inactive", "firing")]


def test_with_a_group_wait_a_group_notifies_at_most_once_per_group_interval(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute", group_wait="1 second",
           group_interval="10 minutes")  # fmt: skip
    s.count(ERRORS, 5, {"route": "/a"}, minute=0)
    s.evaluate()
    s.conn.execute(
        "update metrics.alert_notifications set due_at = now() where project_id = %s", (s.project,)
    )
    s.finish(s.claim()[0]["id"])
    s.count(ERRORS, 5, {"route": "/b"}, minute=0, second=30)
    s.evaluate()
    s.conn.execute(
        "update metrics.alert_notifications set due_at = now() where project_id = %s", (s.project,)
    )
    assert s.claim() == []  # /b waits: the group notified less than group_interval ago
    s.conn.execute(
        "update metrics.alert_messages set created_at = now() - interval '11 minutes' where project_id = %s",
        (s.project,),
    )
    later = s.claim()
    assert [a["labels"]["route"] for a in later[0]["body"]["alerts"]] == ["/b", "/a"]


def test_rules_past_the_projects_cap_are_not_evaluated(s: Scenario) -> None:
    s.conn.execute("update metrics.projects set alert_max_rules = 1 where id = %s", (s.project,))
    s.rule(metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.rule(metric=ERRORS, agg="count", group_by=["route"], window_length="1 minute", threshold=0)
    s.count(ERRORS, 5, ROUTE, minute=0)
    report = s.conn.execute(
        "select metrics.evaluate_alerts(%s, %s, %s)", (s.project, OWNER, s.epoch())
    ).fetchone()
    assert report is not None and report[0]["rules"] == 1 and len(report[0]["transitions"]) == 1


def test_old_history_and_finished_messages_are_pruned_but_pending_ones_stay(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, {"route": "/a"}, minute=0)
    s.evaluate()
    s.finish(s.claim()[0]["id"])  # sent
    s.count(ERRORS, 5, {"route": "/b"}, minute=0, second=30)
    s.evaluate()
    s.claim()  # claimed, never finished: still pending
    for table, column in (
        ("alert_events", "at"),
        ("alert_messages", "created_at"),
        ("alert_notifications", "created_at"),
    ):
        s.conn.execute(
            f"update metrics.{table} set {column} = now() - interval '91 days' where project_id = %s",
            (s.project,),
        )
    report = s.conn.execute("select metrics.prune_alert_history()").fetchone()
    assert report is not None
    left = s.conn.execute(
        "select m.status, count(n.id) from metrics.alert_messages m left join metrics.alert_notifications n"
        " on n.message_id = m.id where m.project_id = %s group by m.status",
        (s.project,),
    ).fetchall()
    assert left == [("pending", 1)]
    events = s.conn.execute(
        "select count(*) from metrics.alert_events where project_id = %s", (s.project,)
    ).fetchone()
    assert events == (0,)


# -- what the review found -----------------------------------------------------------------------------------
def test_more_changed_alerts_than_a_body_shows_go_out_in_several_messages(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.send(*[counter(ERRORS, 5, {"route": f"/r{i:03d}"}, ts=s.at(0, 5)) for i in range(150)])
    s.evaluate()
    first = s.claim()
    s.finish(first[0]["id"])
    messages = first + s.claim()  # one after the other: a group's messages keep their order
    assert len(messages) == 2
    # the changed alerts come first in a body: 100 in the first message, the other 50 in the second
    changed = messages[0]["body"]["alerts"][:100] + messages[1]["body"]["alerts"][:50]
    assert len({a["labels"]["route"] for a in changed}) == 150


def test_a_groups_messages_go_out_in_order(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    firing = s.claim()[0]
    s.finish(firing["id"], False, status=503)  # retried later
    s.tick(1)
    s.tick(2)
    assert s.evaluate() == [("route=/api/hooks/[slug]", "firing", "resolved")]
    s.conn.execute("update metrics.alert_messages set next_attempt_at = now() where id = %s", (firing["id"],))
    again = s.claim()
    assert [m["body"]["status"] for m in again] == ["firing"]  # the resolve waits for it
    s.finish(again[0]["id"])
    assert [m["body"]["status"] for m in s.claim()] == ["resolved"]


def test_a_resolve_is_sent_when_its_firing_was_even_if_a_silence_began_since(s: Scenario) -> None:
    hook = s.receiver()
    s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    s.conn.execute(
        "insert into metrics.alert_silences (project_id, ends_at) values (%s, now() + interval '1 hour')",
        (s.project,),
    )
    s.tick(1)
    s.tick(2)
    s.evaluate()
    assert s.outbox() == [("firing", "queued"), ("resolved", "queued")]


def test_disabling_a_rule_resolves_its_alerts_with_a_notice(s: Scenario) -> None:
    hook = s.receiver()
    rule = s.rule([hook], metric=ERRORS, agg="sum", group_by=["route"], window_length="1 minute")
    s.count(ERRORS, 5, ROUTE, minute=0)
    s.evaluate()
    s.conn.execute("update metrics.alert_rules set enabled = false where id = %s", (rule,))
    assert s.evaluate() == [("route=/api/hooks/[slug]", "firing", "resolved")]
    assert s.states() == {} and s.outbox() == [("firing", "queued"), ("resolved", "queued")]


def test_changing_a_rules_query_resolves_the_alerts_it_no_longer_makes(s: Scenario) -> None:
    rule = s.rule(
        metric=DEPTH, agg="avg", group_by=["queue"], window_length="1 minute", no_data_policy="nodata"
    )
    s.gauge(DEPTH, 10, {"queue": "a"}, 0)
    s.tick(1)
    s.evaluate()
    s.conn.execute("update metrics.alert_rules set group_by = '{}' where id = %s", (rule,))
    s.gauge(DEPTH, 10, {"queue": "a"}, 1)
    s.tick(2)
    assert sorted(s.evaluate()) == [("-", "inactive", "firing"), ("queue=a", "firing", "resolved")]


def test_a_point_from_the_future_does_not_stop_data_time(s: Scenario) -> None:
    s.conn.execute("reset role")
    s.conn.execute("update metrics.config set max_future = '10 minutes'")
    s.conn.execute("set role service_role")
    s.tick(118)  # two minutes ago
    s.send(counter("clock_skew_total", 1, {}, ts=time.time() + 240))  # a fast client clock
    data_time = s.conn.execute("select metrics.alert_data_time(%s)", (s.project,)).fetchone()
    assert data_time is not None and data_time[0].timestamp() <= time.time()
