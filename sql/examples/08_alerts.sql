-- The drop alerts of the last days: which unit, which rule, before and after, the criteria that
-- lost the points, and whether it has cleared.
SELECT fired_at, unit_name, rule, state, round(before, 2) AS before, round(after, 2) AS after,
       causes, resolved_at
FROM alerts
ORDER BY fired_at DESC
LIMIT 20;
