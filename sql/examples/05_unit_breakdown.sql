-- One unit's full breakdown for the live month: every criterion, the points lost, the spec version.
SELECT criterion, criterion_name_en, numerator, denominator, round(ratio, 4) AS ratio,
       round(points, 2) AS points, max_points, round(points_lost, 2) AS points_lost, spec_version
FROM scores
WHERE depth = 0 AND period_kind = 'month' AND is_current
ORDER BY group_id, criterion;
