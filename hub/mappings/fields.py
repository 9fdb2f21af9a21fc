"""The field map between the canonical contact, HubSpot and Salesforce, as data.

Each `FieldRule` names a canonical field, the HubSpot property and the Salesforce field it
maps to, and its sync direction (DESIGN.md "Sync semantics", named after HubSpot's Salesforce
integration rules). The defaults live in `DEFAULT_RULES`; a workspace overrides a field's
direction in `Workspace.settings["mapping"] = {canonical: {"direction": D, "crm": C}}` and the
lifecycle -> Lead Status picklist in `Workspace.settings["mapping"]["_picklists"]`.

Who may change what:
- `inbound_allowed(rule, system, value)`: may a change from `system` set the canonical value?
- `outbound_allowed(rule, system, value, target_value)`: may the hub write the value to `system`?
- `outbound_value(rule, system, value, ...)`: the value in the CRM's format, cut to its length
  limit (or refused with `RefusedValue`) so a value that does not fit is never dropped silently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from hub import defaults
from hub.exceptions import InvalidValueError
from hub.mappings import transforms

logger = logging.getLogger(__name__)

SYSTEMS = ("hubspot", "salesforce")
DIRECTIONS = ("two_way", "most_recent", "crm_wins_unless_blank", "crm_always", "hub_always", "none")
CRM_DIRECTIONS = frozenset({"crm_wins_unless_blank", "crm_always"})   # these name a CRM
SAME = object()   # FieldRule.salesforce_contact default: the Lead field name applies to Contact too

# Forward only (hub -> Salesforce Lead Status); later stages are left to sales.
DEFAULT_LEAD_STATUS_MAP = {
    "subscriber": "Open - Not Contacted",
    "lead": "Open - Not Contacted",
    "marketingqualifiedlead": "Working - Contacted",
}

# HubSpot's default `numemployees` enumeration (lower bound, option value).
HUBSPOT_EMPLOYEE_BUCKETS = ((1000, "1000+"), (500, "500-1000"), (100, "100-500"), (50, "50-100"),
                            (25, "25-50"), (5, "5-25"), (0, "1-5"))

# Lead fields that may not be blank: written as the placeholder, read back as blank.
SALESFORCE_REQUIRED_LEAD_FIELDS = frozenset({"LastName", "Company"})


class RefusedValue(ValueError):
    """A value the target cannot hold and that must not be cut (e.g. an over-long email)."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


@dataclass(frozen=True)
class FieldRule:
    canonical: str
    hubspot: str | None
    salesforce: str | None                       # Lead field
    direction: str = "two_way"
    crm: str | None = None                       # the CRM named by crm_wins_unless_blank / crm_always
    salesforce_contact: Any = SAME               # Contact field; None: not writable on Contact
    write_only: frozenset = frozenset()          # systems the hub writes but never reads (forward only)
    read_only: frozenset = frozenset()           # systems the hub reads but never writes
    max_length: dict = field(default_factory=dict)   # system -> characters
    refuse_too_long: bool = False                # True: refuse (log) instead of cutting
    outbound: str | None = None                  # name in OUTBOUND_TRANSFORMS
    identity_key: bool = False
    needs_lookup: str | None = None              # "owner": CRM values are user ids, matched by email (hub.sync.owners)

    def crm_field(self, system: str, object_type: str | None = None) -> str | None:
        if system == "hubspot":
            return self.hubspot
        if object_type == "Contact" and self.salesforce_contact is not SAME:
            return self.salesforce_contact
        return self.salesforce


def _sf_len(**lengths: int) -> dict:
    return {"salesforce": lengths["sf"]}


# Lengths: Salesforce Object Reference "Lead" standard fields (as the sObject Describe of Lead reports them; fixture tests/fixtures/salesforce-rest).
DEFAULT_RULES: tuple[FieldRule, ...] = (
    FieldRule("email", "email", "Email", "most_recent", max_length=_sf_len(sf=80), refuse_too_long=True,
              identity_key=True),
    FieldRule("first_name", "firstname", "FirstName", max_length=_sf_len(sf=40)),
    FieldRule("last_name", "lastname", "LastName", max_length=_sf_len(sf=80)),
    FieldRule("phone", "phone", "Phone", max_length=_sf_len(sf=40)),
    FieldRule("mobile_phone", "mobilephone", "MobilePhone", max_length=_sf_len(sf=40)),
    FieldRule("company", "company", "Company", salesforce_contact=None, max_length=_sf_len(sf=255)),
    FieldRule("title", "jobtitle", "Title", max_length=_sf_len(sf=128)),
    FieldRule("country", "country", "Country", salesforce_contact="MailingCountry", max_length=_sf_len(sf=80),
              outbound="country_name"),
    FieldRule("state", "state", "State", salesforce_contact="MailingState", max_length=_sf_len(sf=80)),
    FieldRule("city", "city", "City", salesforce_contact="MailingCity", max_length=_sf_len(sf=40)),
    FieldRule("website", "website", "Website", salesforce_contact=None, max_length=_sf_len(sf=255)),
    FieldRule("company_size", "numemployees", "NumberOfEmployees", salesforce_contact=None,
              outbound="employee_count"),
    FieldRule("industry", "industry", "Industry", salesforce_contact=None, max_length=_sf_len(sf=255)),
    FieldRule("lifecycle_stage", "lifecyclestage", "Status", salesforce_contact=None,
              write_only=frozenset({"salesforce"}), outbound="lead_status"),
    FieldRule("owner", "hubspot_owner_id", "OwnerId", "crm_always", crm="salesforce", needs_lookup="owner"),
    FieldRule("score", "hub_score", "Hub_Score__c", "hub_always"),
    FieldRule("grade", "hub_grade", "Hub_Grade__c", "hub_always", max_length=_sf_len(sf=2)),
    FieldRule("score_reasons", "hub_score_reasons", "Hub_Score_Reasons__c", "hub_always",
              max_length=_sf_len(sf=255), outbound="reasons_text"),
)


@dataclass(frozen=True)
class Mapping:
    """The effective map of one workspace: rules plus the lifecycle -> Lead Status picklist."""

    rules: tuple[FieldRule, ...]
    lead_status_map: dict

    def rule(self, canonical: str) -> FieldRule | None:
        return next((r for r in self.rules if r.canonical == canonical), None)

    def by_crm_field(self, system: str, object_type: str | None = None) -> dict[str, FieldRule]:
        return {r.crm_field(system, object_type): r for r in self.rules if r.crm_field(system, object_type)}


def validate_override(canonical: str, direction: str, crm: str | None) -> None:
    """Raise ValueError unless (direction, crm) is a valid setting for a known field."""
    if canonical not in {r.canonical for r in DEFAULT_RULES}:
        raise ValueError(f"unknown field {canonical}")
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction}; one of {', '.join(DIRECTIONS)}")
    if direction in CRM_DIRECTIONS and crm not in SYSTEMS:
        raise ValueError(f"{direction} names a CRM: --crm hubspot|salesforce")
    if direction not in CRM_DIRECTIONS and crm is not None:
        raise ValueError(f"{direction} does not name a CRM")


def load_mapping(workspace_settings: dict | None) -> Mapping:
    """The defaults with the workspace's overrides applied (invalid overrides are skipped, logged)."""
    overrides = dict((workspace_settings or {}).get("mapping") or {})
    picklists = overrides.pop("_picklists", {}) or {}
    rules = []
    for rule in DEFAULT_RULES:
        override = overrides.get(rule.canonical)
        if override:
            direction, crm = override.get("direction", rule.direction), override.get("crm")
            try:
                validate_override(rule.canonical, direction, crm)
                rule = replace(rule, direction=direction, crm=crm)
            except ValueError as exc:
                logger.warning("mapping override for %s ignored: %s", rule.canonical, exc)
        rules.append(rule)
    lead_status = {**DEFAULT_LEAD_STATUS_MAP, **(picklists.get("lead_status") or {})}
    return Mapping(tuple(rules), lead_status)


def set_override(workspace_settings: dict, canonical: str, direction: str, crm: str | None = None) -> dict:
    """A copy of `workspace_settings` with the field's direction overridden (validated)."""
    validate_override(canonical, direction, crm)
    settings = dict(workspace_settings or {})
    mapping = dict(settings.get("mapping") or {})
    mapping[canonical] = {"direction": direction, **({"crm": crm} if crm else {})}
    settings["mapping"] = mapping
    return settings


# --- who may change what ---------------------------------------------------------------------------

def inbound_allowed(rule: FieldRule, system: str, value: Any, named_crm_value: Any = None) -> bool:
    """May a change in `system` set the canonical value of `rule.canonical`?

    `named_crm_value` is what the CRM named by a crm_wins_unless_blank rule holds (when known).
    """
    if rule.direction in ("none", "hub_always") or system in rule.write_only:
        return False
    if rule.direction == "most_recent" and transforms.blank(value):
        return False
    if rule.direction == "crm_always":
        return rule.crm == system
    if rule.direction == "crm_wins_unless_blank":
        return not transforms.blank(value) if rule.crm == system else transforms.blank(named_crm_value)
    return True


def outbound_allowed(rule: FieldRule, system: str, value: Any, target_value: Any = None) -> bool:
    """May the hub write `value` (canonical) to `system`, whose current value is `target_value`?"""
    if rule.direction == "none" or system in rule.read_only:
        return False
    if rule.direction == "most_recent" and transforms.blank(value):
        return False
    if rule.direction == "crm_always" and rule.crm == system:
        return False
    if rule.direction == "crm_wins_unless_blank" and rule.crm == system:
        return transforms.blank(target_value) and not transforms.blank(value)
    return True


# --- values ------------------------------------------------------------------------------------------

def _country_name(value: Any, system: str, mapping: Mapping) -> Any:
    if transforms.blank(value):
        return None
    import pycountry

    found = pycountry.countries.get(alpha_2=str(value).upper())
    return getattr(found, "name", value) if found else value


def _employee_count(value: Any, system: str, mapping: Mapping) -> Any:
    if value is None:
        return None
    if system == "salesforce":
        return int(value)
    return next(label for lower, label in HUBSPOT_EMPLOYEE_BUCKETS if int(value) >= lower)


def _lead_status(value: Any, system: str, mapping: Mapping) -> Any:
    if system != "salesforce":
        return value
    if transforms.blank(value):
        return SKIP
    return mapping.lead_status_map.get(str(value).lower(), SKIP)


def _reasons_text(value: Any, system: str, mapping: Mapping) -> Any:
    if not value:
        return None
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


SKIP = object()   # outbound transform result: do not write this field (e.g. a stage left to sales)

OUTBOUND_TRANSFORMS = {
    "country_name": _country_name,
    "employee_count": _employee_count,
    "lead_status": _lead_status,
    "reasons_text": _reasons_text,
}


@dataclass
class OutboundValue:
    value: Any
    truncated: bool = False
    skip: bool = False


def outbound_value(rule: FieldRule, system: str, value: Any, mapping: Mapping,
                   object_type: str | None = None) -> OutboundValue:
    """The canonical value as `system` stores it. Raises RefusedValue when it cannot be written."""
    if rule.outbound:
        value = OUTBOUND_TRANSFORMS[rule.outbound](value, system, mapping)
        if value is SKIP:
            return OutboundValue(None, skip=True)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    crm_field = rule.crm_field(system, object_type)
    if system == "salesforce" and object_type != "Contact" and crm_field in SALESFORCE_REQUIRED_LEAD_FIELDS \
            and transforms.blank(value):
        return OutboundValue(defaults.PLACEHOLDER)
    if transforms.blank(value):
        return OutboundValue("" if system == "hubspot" else None)
    limit = rule.max_length.get(system)
    if isinstance(value, str) and limit is not None and len(value) > limit:
        if rule.refuse_too_long:
            raise RefusedValue("too_long", f"{crm_field}: {len(value)} characters, max length={limit}")
        cut, _ = transforms.limit_length(value, limit)
        return OutboundValue(cut, truncated=True)
    return OutboundValue(value)


def inbound_value(rule: FieldRule, system: str, raw: Any) -> Any:
    """A CRM's raw value as the canonical value (placeholders read back as blank). May raise InvalidValueError."""
    if system == "salesforce" and raw == defaults.PLACEHOLDER:
        return None
    if rule.canonical == "score":
        return None if transforms.blank(raw) else float(raw)
    if rule.canonical == "score_reasons":
        return raw
    if rule.needs_lookup:
        return transforms.text(raw)         # a CRM user id; hub.sync.owners matches it to an email
    return transforms.canonical(rule.canonical, raw)


def same_value(rule: FieldRule, system: str, crm_value: Any, written: Any) -> bool:
    """Does the CRM already hold `written` (compared in canonical form, so formatting differences match)?"""
    if crm_value == written:
        return True
    if transforms.blank(crm_value) and transforms.blank(written):
        return True
    try:
        return inbound_value(rule, system, crm_value) == inbound_value(rule, system, written)
    except (InvalidValueError, ValueError, TypeError):
        return False


def crm_to_canonical(mapping: Mapping, system: str, properties: dict, object_type: str | None = None) -> dict:
    """Raw CRM properties keyed by canonical field (only fields the CRM may set)."""
    by_field = mapping.by_crm_field(system, object_type)
    out = {}
    for name, raw in properties.items():
        rule = by_field.get(name)
        if rule is not None and system not in rule.write_only and rule.direction not in ("none", "hub_always"):
            out[rule.canonical] = raw
    return out


def describe(mapping: Mapping) -> list[dict]:
    """The map as rows for `hub mapping show`."""
    return [{"field": r.canonical, "hubspot": r.hubspot, "salesforce": r.salesforce, "direction": r.direction,
             "crm": r.crm, "forward_only": sorted(r.write_only), "max_length": r.max_length.get("salesforce")}
            for r in mapping.rules]


def writable_rules(mapping: Mapping, system: str, object_type: str | None = None) -> Iterable[FieldRule]:
    return (r for r in mapping.rules if r.crm_field(system, object_type) and r.direction != "none"
            and system not in r.read_only)
