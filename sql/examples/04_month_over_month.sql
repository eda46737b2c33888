-- Each unit's 2.1 points this month against last month.
WITH monthly AS (
  SELECT unit_code, unit_name, period, points,
         lag(points) OVER (PARTITION BY unit_code ORDER BY period) AS previous_points
  FROM scores WHERE period_kind = 'month'
)
SELECT unit_code, unit_name, period, round(points, 2) AS points,
       round(points - previous_points, 2) AS change
FROM monthly
WHERE period = (SELECT max(period) FROM scores WHERE period_kind = 'month' AND is_current)
ORDER BY change NULLS LAST
LIMIT 20;
