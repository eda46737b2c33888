-- Each unit's total this month against last month, biggest falls first.
SELECT unit_code, unit_name, period, round(total, 2) AS total, round(previous_total, 2) AS last_month,
       round(delta, 2) AS change, rank
FROM totals
WHERE period_kind = 'month' AND is_current
ORDER BY change NULLS LAST
LIMIT 20;
