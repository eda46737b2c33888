-- Week over week: each unit's month total and rank at the end of each week against the week
-- before (the weekly history survives restarts), biggest falls first.
SELECT week_start, unit_code, unit_name, round(total, 2) AS total, round(change, 2) AS change,
       previous_week_rank, rank
FROM week_over_week
WHERE period_kind = 'month'
ORDER BY week_start DESC, change NULLS LAST
LIMIT 20;
