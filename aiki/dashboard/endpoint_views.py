"""Push endpoints in the dashboard: the register form read into a request, endpoints and delivery
attempts as rows, the mount snippet shown beside a new secret. Pure: no I/O, no Litestar."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiki.dashboard.views import fmt_time
from aiki.platform.domain.endpoints import DeliveryAttempt, Endpoint
from aiki.platform.domain.errors import InputInvalid
from aiki.worker_sdk import protocol as p

MAX_FORM_VERSIONS = 100
DEFAULT_GRACE_HOURS = 24
_SPLIT = re.compile(r"[\s,]+")
_ANSWERED = frozenset({"completed", "failed", "suspended", "handed_back", "superseded"})


@dataclass(frozen=True, slots=True)
class EndpointForm:
    """What the register form holds, to fill it again after an error."""

    url: str = ""
    versions: str = ""
    pools: str = ""
    concurrency: str = "10"
    timeout_s: str = "30"


def form_values(form: Mapping[str, object]) -> EndpointForm:
    def text(name: str, default: str = "") -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else default

    return EndpointForm(
        url=text("url"),
        versions=text("versions"),
        pools=text("pools"),
        concurrency=text("concurrency", "10"),
        timeout_s=text("timeout_s", "30"),
    )


def parse_versions(text: str) -> list[p.VersionRef]:
    """``workflow@version`` entries, one a line (or separated by commas or spaces).

    Raises:
        InputInvalid: an entry lacks its ``@version``, or there is none.
    """
    refs: list[p.VersionRef] = []
    for entry in _SPLIT.split(text.strip()):
        if not entry:
            continue
        workflow, at, version = entry.rpartition("@")
        if not at or not workflow or not version:
            raise InputInvalid(f"versions: write each as workflow@version (got {entry[:100]!r})", field="versions")
        refs.append(p.VersionRef(workflow=workflow, version=version))
    if not refs:
        raise InputInvalid("versions: name at least one workflow@version the endpoint serves", field="versions")
    if len(refs) > MAX_FORM_VERSIONS:
        raise InputInvalid(f"versions: at most {MAX_FORM_VERSIONS}", field="versions")
    return refs


def _whole(value: str, field: str, label: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise InputInvalid(f"{label}: a whole number", field=field)
    return int(value)


def create_request(form: EndpointForm) -> p.EndpointCreate:
    """The registration the form asks for (the service checks the values' ranges and the URL)."""
    return p.EndpointCreate(
        url=form.url,
        versions=parse_versions(form.versions),
        pools=[x for x in _SPLIT.split(form.pools) if x],
        concurrency=_whole(form.concurrency, "concurrency", "concurrency"),
        timeout_ms=_whole(form.timeout_s, "timeout_s", "timeout (seconds)") * 1000,
    )


def grace_ms(value: object) -> int:
    """The rotation form's grace period (hours; blank: the default) in milliseconds."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return DEFAULT_GRACE_HOURS * 3_600_000
    if not text.isdigit() or int(text) > 24 * 30:
        raise InputInvalid("grace period: a whole number of hours from 0 to 720", field="grace_hours")
    return int(text) * 3_600_000


@dataclass(frozen=True, slots=True)
class EndpointRow:
    id: str
    href: str
    url: str
    versions: list[str]
    pools: list[str]
    concurrency: int
    timeout: str
    enabled: bool
    breaker: str
    breaker_class: str
    breaker_until: str
    last_delivery: str
    last_status: str
    last_error: str
    failure_rate: str
    failure_class: str
    secret_hint: str
    previous_secret_until: str
    created: str


def breaker_class(state: str) -> str:
    return {"closed": "ok", "open": "bad", "half_open": "waiting"}.get(state, "muted")


def failure_rate(deliveries: int, failures: int) -> str:
    if deliveries == 0:
        return "no deliveries"
    return f"{failures} of {deliveries} failed ({round(100 * failures / deliveries)}%)"


def endpoint_row(e: Endpoint, base: str) -> EndpointRow:
    h = e.health
    return EndpointRow(
        id=e.id,
        href=f"{base}/{e.id}",
        url=e.url,
        versions=[f"{w}@{v}" for w, v in e.versions],
        pools=list(e.pools) or ["default"],
        concurrency=e.concurrency,
        timeout=f"{e.timeout_ms / 1000:g} s",
        enabled=e.enabled,
        breaker=h.breaker,
        breaker_class=breaker_class(h.breaker),
        breaker_until=fmt_time(h.breaker_until) if h.breaker == "open" else "",
        last_delivery=fmt_time(h.last_delivery_at) or "never",
        last_status=str(h.last_status_code) if h.last_status_code is not None else "",
        last_error=h.last_error or "",
        failure_rate=failure_rate(h.deliveries_last_hour, h.failures_last_hour),
        failure_class="bad" if h.failures_last_hour else "ok",
        secret_hint=e.secret_hint,
        previous_secret_until=fmt_time(e.previous_secret_expires_at),
        created=fmt_time(e.created_at),
    )


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    endpoint_id: str
    endpoint_label: str
    endpoint_href: str
    run_id: str
    run_href: str
    revision: int
    attempt: int
    outcome: str
    outcome_class: str
    status_code: str
    latency: str
    error: str
    at: str


def outcome_class(outcome: str) -> str:
    """Answered deliveries are fine whatever the run came to; the rest (no answer, a non-2xx) are not."""
    return "ok" if outcome in _ANSWERED else "bad"


def delivery_rows(
    attempts: list[DeliveryAttempt], endpoints_base: str, runs_base: str, urls: Mapping[str, str] | None = None
) -> list[DeliveryRow]:
    """Attempts as rows; ``urls`` (endpoint id → URL) names their endpoints (else a short id)."""
    return [
        DeliveryRow(
            id=a.id,
            endpoint_id=a.endpoint_id,
            endpoint_label=(urls or {}).get(a.endpoint_id) or f"…{a.endpoint_id[-12:]}",
            endpoint_href=f"{endpoints_base}/{a.endpoint_id}",
            run_id=a.run_id,
            run_href=f"{runs_base}/{a.run_id}",
            revision=a.revision,
            attempt=a.attempt,
            outcome=a.outcome,
            outcome_class=outcome_class(a.outcome),
            status_code=str(a.status_code) if a.status_code is not None else "",
            latency=f"{a.latency_ms} ms" if a.latency_ms is not None else "",
            error=a.error or "",
            at=fmt_time(a.created_at),
        )
        for a in attempts
    ]


def mount_snippet(base_url: str, versions: list[str]) -> str:
    """The code that serves a new endpoint (its secret and key come from the environment)."""
    served = ", ".join(versions)
    return (
        "import os\n\n"
        "from aiki import client, endpoint\n\n"
        "from your_module import your_workflow\n\n"
        "app = endpoint(\n"
        f"    workflows=[your_workflow],  # serves {served}\n"
        f'    client=client(url="{base_url}", api_key=os.environ["AIKI_API_KEY"]),\n'
        '    secret=os.environ["AIKI_ENDPOINT_SECRET"],\n'
        ")\n"
    )
