"""DuckDB's side of the SQL figure: the same queries over the same Parquet files.

usage: duckdb_queries.py NAME=FILE.parquet... QUERY...
Prints a JSON list of [median seconds of 5 runs, rows] per query.
"""
import json
import statistics
import sys
import time

import duckdb

tables = [a for a in sys.argv[1:] if "=" in a and a.split("=", 1)[1].endswith(".parquet")]
queries = [a for a in sys.argv[1:] if a not in tables]
con = duckdb.connect()
for arg in tables:
    name, path = arg.split("=", 1)
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
results = []
for sql in queries:
    times, rows = [], 0
    for _ in range(5):
        started = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        times.append(time.perf_counter() - started)
    results.append([statistics.median(times), rows])
print(json.dumps(results))
