-- The monthly total of every unit, month by month: the trend line.
SELECT unit_code, unit_name, period, period_start, total, band
FROM totals
WHERE period_kind = 'month'
