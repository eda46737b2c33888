SELECT period, criterion, round(points_lost, 4) AS points_lost, loss_rank, good_needed_for_target
FROM points_lost WHERE unit_code = 'H44.01' AND period_kind = 'month' ORDER BY loss_rank
