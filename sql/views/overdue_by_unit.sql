-- Open dossiers past their due date, by unit: the count and the oldest due date.
SELECT d.unit_code, u.unit_name, count(*) AS overdue_dossiers, min(d.due_at) AS oldest_due
FROM dossiers d JOIN units u USING (unit_code)
WHERE d.timeliness = 'open_overdue'
GROUP BY d.unit_code, u.unit_name
