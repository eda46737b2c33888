-- Each unit's total and rank in each current period, week by week, against the week before
-- (from weekly_totals, the figures kept at the last snapshot of every week).
SELECT t.week_start, t.unit_code, t.unit_name, t.period_kind, t.period, t.total, t.rank,
       p.total AS previous_week_total, t.total - p.total AS change, p.rank AS previous_week_rank
FROM weekly_totals t
LEFT JOIN weekly_totals p
  ON p.unit_code = t.unit_code AND p.period = t.period AND p.week_start = t.week_start - INTERVAL '7' DAY
