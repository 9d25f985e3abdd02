"""Benchmarks: kes against the ceiling loop, Quix Streams, eventsourcing and the broker itself.

`python -m bench.run` (or `make bench`) starts its own broker, runs every measurement several
times on fresh topics, and rewrites BENCHMARKS.md. Nothing here is imported by kes itself, and
the test command never runs it; tests/integration/test_bench_smoke.py runs it with tiny sizes.

- `run`: the driver (`python -m bench.run`); `steps`: one run's measurements over its backlog.
- `workload`: the bank commands, pre-encoded; producing a backlog; watching a group's progress.
- `systems`: each system under test as a process (kes worker, ceiling loop, peers, perf tool).
- `ceiling`, `quix_app`, `es_app`: the baseline programs, each run as its own process;
  `commandfile`: the commands on disk for the peer that does not read Kafka.
- `latency`, `recovery`: the ask round trip and the restart measurements.
- `venvs`: the peers' own virtualenvs (they pin other client versions).
- `report`, `tables`: statistics, and what BENCHMARKS.md shows.
- `chaos`: faults under load (`make chaos`), not a benchmark.
"""
