-- The dossiers behind lost points: fee-bearing dossiers not paid online (4.3) and dossiers not
-- digitised (5.2), by unit. Each cX_Y column is true (good), false (lost) or null (not counted).
SELECT unit_code, count(*) FILTER (WHERE c4_3 = false) AS unpaid_online,
       count(*) FILTER (WHERE c5_2 = false) AS not_digitised,
       count(*) FILTER (WHERE c2_1 = false) AS late_or_overdue
FROM dossiers
GROUP BY unit_code
ORDER BY late_or_overdue DESC
LIMIT 20;
