-- The province's on-time score (criterion 2.1) for the live month, quarter and year.
SELECT period_kind, period, numerator, denominator, round(ratio, 4) AS ratio, round(points, 2) AS points
FROM scores
WHERE depth = 0 AND is_current
ORDER BY period_start DESC, period_kind;
