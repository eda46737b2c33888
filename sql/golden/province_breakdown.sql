SELECT criterion, numerator, denominator, round(ratio, 4) AS ratio, round(points, 4) AS points, max_points
FROM scores WHERE unit_code = 'H44' AND period = '2026-11' ORDER BY criterion
