"""DuckDB's side of the SQL figure: the same queries over the same Parquet files.

usage: duckdb_queries.py --runs=N NAME=FILE.parquet... QUERY...
Prints a JSON list of [median seconds of N runs, rows] per query.
"""
import json
import statistics
import sys
import time

import duckdb

args = sys.argv[1:]
runs = int(args.pop(0).removeprefix("--runs="))
tables = [a for a in args if "=" in a and a.split("=", 1)[1].endswith(".parquet")]
queries = [a for a in args if a not in tables]
con = duckdb.connect()
for arg in tables:
    name, path = arg.split("=", 1)
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
results = []
for sql in queries:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        times.append(time.perf_counter() - started)
    results.append([statistics.median(times), rows])
print(json.dumps(results))
