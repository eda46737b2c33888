-- Points lost by criterion in the live periods, largest first within each unit and period, with
-- how many more good dossiers (or procedures) that criterion alone needs to reach the target total.
SELECT unit_code, unit_name, period_kind, period, criterion, criterion_name_en, points_lost, loss_rank,
       total, target_total, good_needed_for_target
FROM gaps
WHERE points_lost > 0
