-- Open dossiers already past their due date, oldest due first: what to chase today.
SELECT d.dossier_id, u.unit_name, d.procedure_code, d.received_at, d.due_at
FROM dossiers d JOIN units u USING (unit_code)
WHERE d.timeliness = 'open_overdue'
ORDER BY d.due_at
LIMIT 20;
