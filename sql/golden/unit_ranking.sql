SELECT unit_code, round(total, 4) AS total, band, rank, siblings FROM unit_ranking ORDER BY parent_code NULLS FIRST, rank, unit_code
