-- The province's Index 766 total for the live month, quarter, half-year and year, with its band,
-- change against the period before, and rank.
SELECT period_kind, period, round(total, 2) AS total, band, round(delta, 2) AS delta, rank, siblings
FROM totals
WHERE depth = 0 AND is_current
ORDER BY period_start DESC, period_kind;
