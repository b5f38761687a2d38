"""SQL over the store's alert tables (migration 011: ``alert_events``, ``alert_acks``),
shared by the dashboards (firing bands, the Alerts dashboard) and the reports (MTTA).

An **incident** is one firing of one alert: its records on the ``alerts`` topic share
the fingerprint and ``starts_at`` (the evaluation that fired it); the resolved record
carries ``ends_at``. An incident still firing ends, for drawing, at its newest record's
horizon (``ends_at`` of a firing record: Alertmanager's resolve timeout) or the range's
end, whichever is first. Its **acknowledgement** is the first ``acknowledge`` command
at or after it fired (and before it resolved) naming its fingerprint, or the group
key of a notification that carried it (the notifier's delivery log). MTTA is the mean
of acknowledged incidents' time from firing to acknowledgement.

A **pending** alert (evaluated active, its ``for`` not yet over) is on no topic the
notifier reads; the evaluator writes it as Prometheus does, as ``ALERTS{alertstate=
"pending"}`` samples, which the store keeps with the other samples.

Every statement binds ``{start_ms:Int64}`` and ``{end_ms:Int64}`` (server-side
parameters) and reads the incidents that overlap ``[start_ms, end_ms]``, at most
``{limit:UInt32}`` of them.
"""

from __future__ import annotations

INCIDENTS = """
SELECT fingerprint, alertname, labels, fired_ms,
       if(isNull(resolved_ms), least(ifNull(horizon_ms, {end_ms:Int64}), {end_ms:Int64}),
          resolved_ms) AS until_ms,
       resolved_ms
FROM (
    SELECT fingerprint, any(alertname) AS alertname, any(labels) AS labels,
           toUnixTimestamp64Milli(starts_at) AS fired_ms,
           toUnixTimestamp64Milli(maxIf(ends_at, status = 'RESOLVED')) AS resolved_ms,
           toUnixTimestamp64Milli(maxIf(ends_at, status = 'FIRING')) AS horizon_ms
    FROM alert_events FINAL
    WHERE starts_at <= fromUnixTimestamp64Milli({end_ms:Int64})
    GROUP BY fingerprint, starts_at
)
WHERE ifNull(resolved_ms, {end_ms:Int64}) >= {start_ms:Int64}
"""

ACKS = """
SELECT fingerprint, toUnixTimestamp64Milli(time) AS t, by FROM alert_acks FINAL
WHERE fingerprint != '' AND time <= fromUnixTimestamp64Milli({end_ms:Int64})
UNION ALL
SELECT g.fp AS fingerprint, toUnixTimestamp64Milli(k.time) AS t, k.by AS by
FROM alert_acks AS k FINAL
INNER JOIN (
    SELECT DISTINCT group_key, arrayJoin(fingerprints) AS fp FROM deliveries FINAL
    WHERE time >= fromUnixTimestamp64Milli({start_ms:Int64}) - INTERVAL 7 DAY
) AS g ON k.group_key = g.group_key
WHERE k.group_key != '' AND k.time <= fromUnixTimestamp64Milli({end_ms:Int64})
"""

# one row per incident: who acknowledged it and when (0 and '' when nobody did)
ACKED_INCIDENTS = f"""
SELECT i.fingerprint AS fingerprint, any(i.alertname) AS alertname, any(i.labels) AS labels,
       i.fired_ms AS fired_ms, any(i.until_ms) AS until_ms, any(i.resolved_ms) AS resolved_ms,
       minIf(a.t, a.t >= i.fired_ms AND a.t <= ifNull(i.resolved_ms, a.t)) AS acked_ms,
       argMinIf(a.by, a.t, a.t >= i.fired_ms AND a.t <= ifNull(i.resolved_ms, a.t))
         AS acked_by
FROM ({INCIDENTS}) AS i
LEFT JOIN ({ACKS}) AS a ON a.fingerprint = i.fingerprint
GROUP BY i.fingerprint, i.fired_ms
ORDER BY fired_ms DESC
LIMIT {{limit:UInt32}}
"""

# Pending alerts from the evaluator's ALERTS{alertstate="pending"} samples: one row per
# run of a series, a run ending at its staleness marker (written where the alert fired
# or stopped being active); `ended` = 0 for a run still pending at its last sample, `n`
# its samples. Runs overlapping [start_ms, end_ms], newest first, at most {limit}.
PENDING_RUNS = """
SELECT any(s.alert_labels) AS labels, toUnixTimestamp64Milli(min(p.ts)) AS from_ms,
       toUnixTimestamp64Milli(max(p.ts)) AS to_ms, max(p.stale) AS ended,
       countIf(p.stale = 0) AS n
FROM (
    SELECT series_id, ts, isNaN(value) AS stale,
           sum(isNaN(value)) OVER (PARTITION BY series_id ORDER BY ts
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS run
    FROM samples FINAL
    WHERE series_id IN (SELECT series_id FROM series
                        WHERE name = 'ALERTS' AND labels['alertstate'] = 'pending')
      AND ts >= fromUnixTimestamp64Milli({start_ms:Int64})
      AND ts <= fromUnixTimestamp64Milli({end_ms:Int64})
) AS p
INNER JOIN (
    SELECT series_id, any(labels) AS alert_labels FROM series
    WHERE name = 'ALERTS' AND labels['alertstate'] = 'pending' GROUP BY series_id
) AS s ON s.series_id = p.series_id
GROUP BY p.series_id, p.run
HAVING n > 0
ORDER BY from_ms DESC
LIMIT {limit:UInt32}
"""

# MTTA and MTTR (seconds) of the incidents that fired in [start_ms, end_ms)
MTTA_MTTR = f"""
SELECT count() AS incidents,
       countIf(acked_ms > 0) AS acknowledged,
       avgIf((acked_ms - fired_ms) / 1000, acked_ms > 0) AS mtta_s,
       countIf(resolved_ms IS NOT NULL) AS resolved,
       avgIf((resolved_ms - fired_ms) / 1000, resolved_ms IS NOT NULL) AS mttr_s
FROM ({ACKED_INCIDENTS})
WHERE fired_ms >= {{start_ms:Int64}} AND fired_ms < {{end_ms:Int64}}
"""

# The Alerts dashboard's panels (infra/dashboards/alerts.yaml holds the same text, with
# the limit filled in: a dashboard binds only start_ms, end_ms and step_s; a unit test
# keeps the two equal)
DASHBOARD_LIMIT = 500
DASHBOARD_MTTA = f"""
SELECT mtta_s AS MTTA, mttr_s AS MTTR FROM ({MTTA_MTTR})
""".replace("{limit:UInt32}", str(DASHBOARD_LIMIT))
DASHBOARD_INCIDENTS = f"""
SELECT alertname, fromUnixTimestamp64Milli(fired_ms) AS fired,
       if(resolved_ms IS NULL, 'firing', toString(fromUnixTimestamp64Milli(resolved_ms)))
         AS resolved,
       if(acked_ms = 0, '', toString(fromUnixTimestamp64Milli(acked_ms))) AS acknowledged,
       acked_by AS by,
       if(acked_ms = 0, NULL, round((acked_ms - fired_ms) / 1000)) AS to_ack_s,
       arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), mapKeys(labels),
                                  mapValues(labels)), ', ') AS labels
FROM ({ACKED_INCIDENTS})
""".replace("{limit:UInt32}", str(DASHBOARD_LIMIT))
