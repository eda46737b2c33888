SELECT unit_code, period, round(total, 4) AS total FROM monthly_trend ORDER BY unit_code, period
