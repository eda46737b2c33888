-- Which procedures run late: dossiers, late or overdue ones, and the average processing time, so
-- the units can fix the slowest procedures first.
SELECT procedure_code, count(*) AS dossiers,
       count(*) FILTER (WHERE timeliness IN ('late', 'open_overdue')) AS late_or_overdue,
       round(avg(processing_days), 1) AS avg_processing_days
FROM dossiers
WHERE timeliness <> 'not_received'
GROUP BY procedure_code
ORDER BY late_or_overdue DESC, dossiers DESC
LIMIT 10;
