"""Series of the door policy: refusals by reason and use by consumer.

Consumer label values are usernames from the config (bounded); a request without a
consumer is `-`, never a client IP or key.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from ..fastmetrics import Counter
from ..livemetrics import PREFIX
from ..observe import RequestRecord

NO_CONSUMER = "-"


class SecurityMetrics:
    """An observer of finished requests, on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.auth_rejected = Counter(
            f"{PREFIX}auth_rejected",
            "Requests refused by key-auth, by reason (missing, invalid, duplicate, forbidden)",
            ("route", "reason"),
            registry=registry,
        )
        self.rate_limited = Counter(
            f"{PREFIX}rate_limited",
            "Requests refused by a rate limit (requests, tokens), or because the "
            "rate-limit store was down on a route that is not fault tolerant (store)",
            ("route", "consumer", "limit"),
            registry=registry,
        )
        self.store_errors = Counter(
            f"{PREFIX}rate_limit_store_errors",
            "Rate-limit store (Redis) failures, by what was done with the request "
            "(allowed: fault tolerant, rejected: not)",
            ("route", "action"),
            registry=registry,
        )
        self.consumer_requests = Counter(
            f"{PREFIX}consumer_requests",
            "Requests of authenticated consumers, by outcome",
            ("route", "consumer", "outcome"),
            registry=registry,
        )
        self.consumer_tokens = Counter(
            f"{PREFIX}consumer_tokens",
            "Tokens used by authenticated consumers (usage as reported or estimated)",
            ("route", "consumer", "token_type"),
            registry=registry,
        )

    def store_error(self, route: str) -> Callable[[str], None]:
        def count(action: str) -> None:
            self.store_errors.labels(route, action).inc()

        return count

    def finished(self, rec: RequestRecord) -> None:
        if rec.auth_rejected is not None:
            self.auth_rejected.labels(rec.route.name, rec.auth_rejected).inc()
            return
        consumer = rec.consumer
        if rec.rate_limited is not None:
            self.rate_limited.labels(
                rec.route.name, consumer or NO_CONSUMER, rec.rate_limited
            ).inc()
        if consumer is None:
            return
        route = rec.route.name
        self.consumer_requests.labels(route, consumer, rec.outcome).inc()
        u = rec.usage
        if u is not None:
            if u.prompt_tokens:
                self.consumer_tokens.labels(route, consumer, "prompt").inc(u.prompt_tokens)
            if u.completion_tokens:
                self.consumer_tokens.labels(route, consumer, "completion").inc(u.completion_tokens)
