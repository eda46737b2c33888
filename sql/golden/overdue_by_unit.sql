SELECT unit_code, unit_name, overdue_dossiers, oldest_due FROM overdue_by_unit ORDER BY unit_code
