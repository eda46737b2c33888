SELECT period, round(total, 4) AS total, band, round(delta, 4) AS delta, rank FROM totals WHERE unit_code = 'H44' ORDER BY period
