-- Where the units lose the most points this month: criterion by criterion, and how many more good
-- dossiers (or procedures) that criterion alone would need to bring the unit to the target total.
SELECT unit_code, unit_name, criterion, criterion_name_en, round(points_lost, 2) AS points_lost,
       round(total, 2) AS total, good_needed_for_target
FROM gaps
WHERE period_kind = 'month' AND loss_rank <= 3 AND points_lost > 0
ORDER BY points_lost DESC, unit_code
LIMIT 20;
