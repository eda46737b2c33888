SELECT unit, total FROM totals
