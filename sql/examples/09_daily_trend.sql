-- The province's month-to-date total day by day (the last figures of each day, from the daily
-- history), with its group points: the trend behind this week's briefing.
SELECT t.day, round(t.total, 2) AS total, t.band,
       round(sum(g.points) FILTER (WHERE g.group_id = 2), 2) AS processing_progress,
       round(sum(g.points) FILTER (WHERE g.group_id = 5), 2) AS digitisation
FROM daily_totals t
JOIN daily_group_scores g ON g.day = t.day AND g.unit_code = t.unit_code AND g.period = t.period
WHERE t.depth = 0 AND t.period_kind = 'month'
GROUP BY t.day, t.total, t.band
ORDER BY t.day;
