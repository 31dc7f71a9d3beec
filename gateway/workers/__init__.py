"""One gateway process per core: a supervisor and N worker processes (`--workers N`).

- `count`: how many workers (`auto` = the CPUs this process may use, cgroup limits too).
- `sockets`: the proxy listener, bound once by the supervisor and shared by the workers
  (SO_REUSEPORT, or one listening socket accepted on by all).
- `child`: the worker side (a normal `llama-gateway serve` given the supervisor's
  sockets and a private status listener).
- `supervisor`: starts, restarts and drains the workers, forwards signals.
- `podstatus`, `podmetrics`, `statusapp`: the pod's /healthz, /readyz, /status and
  /metrics, built from every worker's own.

Kept light: the CLI imports this package for `--workers` parsing on every start.
Design and trade-offs: docs/design.md, "Workers".
"""
