-- Units losing the most points on 2.1 this month, with how many dossiers are behind the loss.
SELECT unit_code, unit_name, numerator, denominator, round(points, 2) AS points,
       round(max_points - points, 2) AS points_lost, denominator - numerator AS late_or_overdue
FROM scores
WHERE depth > 0 AND is_current AND period_kind = 'month' AND denominator > 0
ORDER BY points_lost DESC, denominator DESC
LIMIT 10;
