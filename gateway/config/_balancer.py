"""Validation of the `balancer` block including our `healthchecks` extension."""

from __future__ import annotations

from typing import Any

from ._checks import Checker
from .schema import (
    ALGORITHMS,
    FAILOVER_CRITERIA,
    ActiveHealthcheck,
    BalancerConfig,
    HealthDirection,
    QueueConfig,
)


class BalancerChecks(Checker):
    def balancer(self, raw: Any, path: str) -> BalancerConfig:
        d = self.mapping(
            raw,
            path,
            {
                "algorithm",
                "tokens_count_strategy",
                "latency_strategy",
                "hash_on_header",
                "slots",
                "retries",
                "connect_timeout",
                "write_timeout",
                "read_timeout",
                "failover_criteria",
                "max_fails",
                "fail_timeout",
                "healthchecks",
                "queue",
            },
            {},
        )
        b = BalancerConfig()
        algorithm = self.choice(d, "algorithm", path, ALGORITHMS, b.algorithm)
        criteria = d.get("failover_criteria")
        if criteria is None:
            criteria_t = b.failover_criteria
        elif not isinstance(criteria, list) or not all(isinstance(c, str) for c in criteria):
            self.err(f"{path}.failover_criteria", "must be a list of strings")
            criteria_t = b.failover_criteria
        else:
            bad = [c for c in criteria if c not in FAILOVER_CRITERIA]
            if bad:
                self.err(
                    f"{path}.failover_criteria",
                    f"unknown criteria {', '.join(map(repr, bad))} "
                    f"(allowed: {', '.join(FAILOVER_CRITERIA)})",
                )
            criteria_t = tuple(dict.fromkeys(c for c in criteria if c in FAILOVER_CRITERIA))

        def ms(key: str, default: int) -> Any:  # Kong's millisecond fields
            return self.number(d, key, path, default, integer=True, lo=1, hi=2**31 - 1)

        return BalancerConfig(
            algorithm=algorithm,
            tokens_count_strategy=self.choice(
                d,
                "tokens_count_strategy",
                path,
                ("total-tokens", "prompt-tokens", "completion-tokens", "cost"),
                b.tokens_count_strategy,
            ),
            latency_strategy=self.choice(
                d, "latency_strategy", path, ("tpot", "e2e"), b.latency_strategy
            ),
            hash_on_header=self.token(d, "hash_on_header", path, b.hash_on_header),
            slots=self.number(d, "slots", path, b.slots, integer=True, lo=10, hi=65536),
            retries=self.number(d, "retries", path, b.retries, integer=True, lo=0, hi=32767),
            connect_timeout=ms("connect_timeout", b.connect_timeout),
            write_timeout=ms("write_timeout", b.write_timeout),
            read_timeout=ms("read_timeout", b.read_timeout),
            failover_criteria=criteria_t,
            max_fails=self.number(d, "max_fails", path, b.max_fails, integer=True, lo=0, hi=32767),
            fail_timeout=ms("fail_timeout", b.fail_timeout),
            healthchecks=self.healthchecks(d, path),
            queue=self.queue(d.get("queue"), f"{path}.queue"),
        )

    def queue(self, raw: Any, path: str) -> QueueConfig | None:
        if raw is None:
            return None
        q = self.mapping(raw, path, {"max_size", "timeout", "priority_header"}, {})
        default = QueueConfig()
        header = self.token(q, "priority_header", path, default.priority_header)
        return QueueConfig(
            max_size=self.number(
                q, "max_size", path, default.max_size, integer=True, lo=1, hi=1_000_000
            ),
            timeout=self.number(
                q, "timeout", path, default.timeout, integer=True, lo=1, hi=2**31 - 1
            ),
            priority_header=header,
        )

    def healthchecks(self, d: dict, path: str) -> ActiveHealthcheck | None:
        if "healthchecks" not in d:
            return ActiveHealthcheck()
        hpath = f"{path}.healthchecks"
        h = self.mapping(d["healthchecks"], hpath, {"active"}, {"passive": None})
        if "active" in h and h["active"] is None:
            return None
        apath = f"{hpath}.active"
        a = self.mapping(
            h.get("active"), apath, {"http_path", "timeout", "healthy", "unhealthy", "type"}, {}
        )
        if "type" in a and a["type"] not in ("http", "https"):
            self.err(f"{apath}.type", "must be http or https (the target's URL scheme is used)")
        default = ActiveHealthcheck()
        http_path = self.string(a, "http_path", apath, None)
        if http_path is None or not self.clean(http_path, f"{apath}.http_path"):
            pass  # the probe's request line carries it: no control characters
        elif not http_path.startswith("/"):
            self.err(f"{apath}.http_path", "must start with '/'")
        elif any(c.isspace() for c in http_path):
            self.err(f"{apath}.http_path", "must not contain spaces (write one as %20)")
        hp = f"{apath}.healthy"
        hd = self.mapping(a.get("healthy"), hp, {"interval", "successes", "http_statuses"}, {})
        statuses = hd.get("http_statuses", list(default.healthy.http_statuses))
        if not isinstance(statuses, list) or not all(
            isinstance(s, int) and 100 <= s <= 999 for s in statuses
        ):
            self.err(f"{hp}.http_statuses", "must be a list of HTTP status codes")
            statuses = list(default.healthy.http_statuses)
        healthy = HealthDirection(
            interval=self.number(hd, "interval", hp, default.healthy.interval, lo=0, hi=65535),
            successes=self.number(
                hd, "successes", hp, default.healthy.successes, integer=True, lo=0, hi=255
            ),
            http_statuses=tuple(statuses),
        )
        up = f"{apath}.unhealthy"
        ud = self.mapping(
            a.get("unhealthy"), up, {"interval", "http_failures", "tcp_failures", "timeouts"}, {}
        )
        du = default.unhealthy
        unhealthy = HealthDirection(
            interval=self.number(ud, "interval", up, du.interval, lo=0, hi=65535),
            http_failures=self.number(
                ud, "http_failures", up, du.http_failures, integer=True, lo=0, hi=255
            ),
            tcp_failures=self.number(
                ud, "tcp_failures", up, du.tcp_failures, integer=True, lo=0, hi=255
            ),
            timeouts=self.number(ud, "timeouts", up, du.timeouts, integer=True, lo=0, hi=255),
        )
        return ActiveHealthcheck(
            http_path=http_path,
            timeout=self.number(a, "timeout", apath, default.timeout, lo=0, lo_open=True, hi=65535),
            healthy=healthy,
            unhealthy=unhealthy,
        )
