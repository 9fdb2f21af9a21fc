"""What a rule can see: the names an expression may use, built from a contact and its activities.

Profile names come from the canonical contact; e-commerce names (purchases, monetary, recency_days,
tenure_days) are derived from purchase activities; activity rules also see the activity (`kind`,
`props`, `form`, `url`); segment rules also see the evaluation (`score`, `grade`, `mql`).
Named lists from the rule set (e.g. `competitor_domains`) are added as frozensets.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, NamedTuple

SECONDS_PER_DAY = 86400.0

FREE_EMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com", "live.com", "icloud.com",
    "aol.com", "gmx.de", "gmx.net", "web.de", "proton.me", "protonmail.com", "mail.com", "yandex.ru",
})

PROFILE_NAMES = frozenset({
    "email", "email_domain", "free_email", "first_name", "last_name", "company", "title", "country", "state",
    "city", "website", "company_size", "industry", "lifecycle_stage", "owner", "custom", "consent_email",
    "purchases", "monetary", "recency_days", "tenure_days", "average_order",
})
ACTIVITY_NAMES = frozenset({"kind", "props", "form", "url", "age_days"})
EVALUATION_NAMES = frozenset({"score", "grade", "mql", "behaviour_score", "fit_points"})

PURCHASE_KINDS = frozenset({"purchase", "order"})


class ActivityFact(NamedTuple):
    """One activity as scoring sees it."""

    kind: str
    occurred_at: datetime
    properties: dict


def _attr(contact: Any, name: str):
    if isinstance(contact, dict):
        return contact.get(name)
    return getattr(contact, name, None)


def _amount(properties: dict) -> float:
    for key in ("amount", "total", "total_price", "value"):
        value = properties.get(key)
        if value not in (None, ""):
            try:
                return float(value)
            except (TypeError, ValueError):
                return 0.0
    return 0.0


def purchase_features(activities: Iterable[ActivityFact], now: datetime) -> dict:
    """RFM plus duration: purchases (frequency), monetary, recency_days, tenure_days, average_order."""
    count, total, first, last = 0, 0.0, None, None
    for activity in activities:
        if activity.kind not in PURCHASE_KINDS:
            continue
        count += 1
        total += _amount(activity.properties or {})
        at = activity.occurred_at
        first = at if first is None or at < first else first
        last = at if last is None or at > last else last
    return {
        "purchases": count,
        "monetary": round(total, 2),
        "average_order": round(total / count, 2) if count else 0.0,
        "recency_days": max(0.0, (now - last).total_seconds() / SECONDS_PER_DAY) if last else None,
        "tenure_days": max(0.0, (now - first).total_seconds() / SECONDS_PER_DAY) if first else None,
    }


def _consent_email(consent: dict | None) -> bool | None:
    entry = (consent or {}).get("email")
    if isinstance(entry, dict):
        return entry.get("granted")
    return entry if isinstance(entry, bool) else None


def profile_context(contact: Any, activities: Iterable[ActivityFact], now: datetime,
                    lists: dict[str, frozenset] | None = None) -> dict:
    """The names profile, grade and segment rules see."""
    email = (_attr(contact, "email") or "").lower() or None
    domain = email.rsplit("@", 1)[1] if email and "@" in email else None
    context = {
        "email": email,
        "email_domain": domain,
        "free_email": domain in FREE_EMAIL_DOMAINS if domain else False,
        "consent_email": _consent_email(_attr(contact, "consent")),
        "custom": _attr(contact, "custom") or {},
    }
    for name in ("first_name", "last_name", "company", "title", "country", "state", "city", "website",
                 "company_size", "industry", "lifecycle_stage", "owner"):
        context[name] = _attr(contact, name)
    context.update(purchase_features(activities, now))
    if lists:
        context.update(lists)
    return context


def activity_context(profile: dict, activity: ActivityFact, now: datetime) -> dict:
    """Profile names plus the activity's own."""
    properties = activity.properties or {}
    context = dict(profile)
    context["kind"] = activity.kind
    context["props"] = properties
    context["form"] = properties.get("form")
    context["url"] = properties.get("url")
    context["age_days"] = max(0.0, (now - activity.occurred_at).total_seconds() / SECONDS_PER_DAY)
    return context
