-- Units ranked among their siblings on the live month's total, best first, with band and change.
SELECT unit_code, unit_name, parent_code, depth, period, total, band, delta, rank, siblings
FROM totals
WHERE period_kind = 'month' AND is_current
ORDER BY parent_code NULLS FIRST, rank, unit_code
