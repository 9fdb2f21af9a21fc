"""MQL: thresholds with hysteresis, and what MQL means in each CRM.

A contact becomes an MQL when its score reaches `enter_score` and its grade is in `enter_grades`;
it stays one until its score drops below `exit_score` or its grade leaves `keep_grades`. The gap
between the two is hysteresis: a score wobbling around the entry threshold does not flap.
The policy becomes an ordinary segment (named `segment`), so dry runs and triggers treat it like
any other.

In the CRMs the lifecycle only moves forward: HubSpot `lifecyclestage` is set to
`marketingqualifiedlead` only from an earlier stage; Salesforce Lead `Status` follows the
picklist map of DESIGN.md, also forward only.
"""
from __future__ import annotations

from dataclasses import dataclass

from hub.rules.segments import Segment, Trigger

HUBSPOT_LIFECYCLE_ORDER = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                           "customer", "evangelist")
MQL_STAGE = "marketingqualifiedlead"

# Canonical lifecycle stage -> Salesforce Lead Status (DESIGN.md default picklist map).
SALESFORCE_LEAD_STATUS = {
    "subscriber": "Open - Not Contacted",
    "lead": "Open - Not Contacted",
    "marketingqualifiedlead": "Working - Contacted",
}
SALESFORCE_STATUS_ORDER = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                           "Closed - Not Converted")


@dataclass(frozen=True)
class MqlPolicy:
    enter_score: float = 60
    exit_score: float = 45
    enter_grades: tuple[str, ...] = ("A", "B")
    keep_grades: tuple[str, ...] = ("A", "B", "C")
    segment: str = "mql"
    on_enter: tuple[Trigger, ...] = (Trigger("enter", "handoff"),)

    def as_segment(self) -> Segment:
        return Segment(
            name=self.segment,
            when=f"score >= {self.enter_score!r} and grade in {tuple(self.enter_grades)!r}",
            exit_when=f"score < {self.exit_score!r} or grade not in {tuple(self.keep_grades)!r}",
            triggers=self.on_enter,
        )


def _rank(order: tuple[str, ...], value: str | None) -> int:
    """Position in the order; unknown or blank values rank before everything (-1)."""
    if not value:
        return -1
    try:
        return order.index(value.lower() if order is HUBSPOT_LIFECYCLE_ORDER else value)
    except ValueError:
        # A custom stage we cannot place: treat it as later, so the hub never moves it.
        return len(order)


def forward_lifecycle(current: str | None, target: str = MQL_STAGE) -> str | None:
    """The HubSpot lifecyclestage to write, or None when writing it would move the contact backwards."""
    return target if _rank(HUBSPOT_LIFECYCLE_ORDER, current) < _rank(HUBSPOT_LIFECYCLE_ORDER, target) else None


def forward_lead_status(current: str | None, stage: str = MQL_STAGE,
                        picklist: dict[str, str] | None = None) -> str | None:
    """The Salesforce Lead Status to write for `stage`, or None when it would not move forward."""
    target = (picklist or SALESFORCE_LEAD_STATUS).get(stage)
    if target is None:
        return None
    return target if _rank(SALESFORCE_STATUS_ORDER, current) < _rank(SALESFORCE_STATUS_ORDER, target) else None
