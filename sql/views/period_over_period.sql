-- Every unit's total per period with the period before and the change, for every period kind.
SELECT unit_code, unit_name, period_kind, period, period_start, total, previous_total, delta, rank
FROM totals
WHERE previous_total IS NOT NULL
