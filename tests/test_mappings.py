"""The field map as data: defaults from DESIGN.md, directions, overrides, lengths, picklists."""
from __future__ import annotations

import json

import pytest

from hub.mappings import fields as fm

MAPPING = fm.load_mapping({})


@pytest.mark.parametrize("canonical, hubspot, salesforce, direction", [
    ("email", "email", "Email", "most_recent"),
    ("first_name", "firstname", "FirstName", "two_way"),
    ("last_name", "lastname", "LastName", "two_way"),
    ("phone", "phone", "Phone", "two_way"),
    ("mobile_phone", "mobilephone", "MobilePhone", "two_way"),
    ("company", "company", "Company", "two_way"),
    ("title", "jobtitle", "Title", "two_way"),
    ("country", "country", "Country", "two_way"),
    ("company_size", "numemployees", "NumberOfEmployees", "two_way"),
    ("lifecycle_stage", "lifecyclestage", "Status", "two_way"),
    ("owner", "hubspot_owner_id", "OwnerId", "crm_always"),
    ("score", "hub_score", "Hub_Score__c", "hub_always"),
    ("grade", "hub_grade", "Hub_Grade__c", "hub_always"),
    ("score_reasons", "hub_score_reasons", "Hub_Score_Reasons__c", "hub_always"),
])
def test_default_map_follows_design(canonical, hubspot, salesforce, direction):
    rule = MAPPING.rule(canonical)
    assert (rule.hubspot, rule.salesforce, rule.direction) == (hubspot, salesforce, direction)


def test_salesforce_lengths_come_from_the_describe_excerpt():
    lengths = {r.salesforce: r.max_length.get("salesforce") for r in MAPPING.rules}
    assert (lengths["FirstName"], lengths["LastName"], lengths["Company"], lengths["Email"]) == (40, 80, 255, 80)


@pytest.mark.parametrize("stage, status", [
    ("subscriber", "Open - Not Contacted"),
    ("lead", "Open - Not Contacted"),
    ("marketingqualifiedlead", "Working - Contacted"),
])
def test_lifecycle_maps_forward_to_lead_status(stage, status):
    assert fm.outbound_value(MAPPING.rule("lifecycle_stage"), "salesforce", stage, MAPPING).value == status


def test_later_stages_are_left_to_sales_and_status_never_flows_back():
    rule = MAPPING.rule("lifecycle_stage")
    assert fm.outbound_value(rule, "salesforce", "customer", MAPPING).skip
    assert not fm.inbound_allowed(rule, "salesforce", "Working - Contacted")
    assert fm.inbound_allowed(rule, "hubspot", "customer")
    assert fm.outbound_value(rule, "hubspot", "customer", MAPPING).value == "customer"


def test_too_long_value_is_cut_and_reported_never_dropped():
    out = fm.outbound_value(MAPPING.rule("first_name"), "salesforce", "A" * 55, MAPPING)
    assert (out.value, out.truncated) == ("A" * 40, True)
    assert fm.outbound_value(MAPPING.rule("first_name"), "hubspot", "A" * 55, MAPPING).value == "A" * 55


def test_too_long_email_is_refused_not_cut():
    with pytest.raises(fm.RefusedValue) as refused:
        fm.outbound_value(MAPPING.rule("email"), "salesforce", "a" * 75 + "@example.com", MAPPING)
    assert refused.value.reason == "too_long"


def test_blank_required_lead_fields_get_the_placeholder():
    assert fm.outbound_value(MAPPING.rule("last_name"), "salesforce", None, MAPPING).value == "[not provided]"
    assert fm.outbound_value(MAPPING.rule("company"), "salesforce", "", MAPPING).value == "[not provided]"
    assert fm.outbound_value(MAPPING.rule("last_name"), "hubspot", None, MAPPING).value == ""
    assert fm.inbound_value(MAPPING.rule("company"), "salesforce", "[not provided]") is None


@pytest.mark.parametrize("direction, crm, system, value, target, expected", [
    ("two_way", None, "salesforce", None, "x", True),              # clearing a value is written too
    ("most_recent", None, "salesforce", None, "x", False),         # a blank never wins
    ("crm_always", "salesforce", "salesforce", "v", None, False),  # the named CRM is never written
    ("crm_always", "salesforce", "hubspot", "v", None, True),
    ("crm_wins_unless_blank", "hubspot", "hubspot", "v", "old", False),
    ("crm_wins_unless_blank", "hubspot", "hubspot", "v", None, True),   # fills a blank in the named CRM
    ("hub_always", None, "hubspot", 40, None, True),
    ("none", None, "hubspot", "v", None, False),
])
def test_outbound_direction_rules(direction, crm, system, value, target, expected):
    rule = fm.FieldRule("title", "jobtitle", "Title", direction, crm=crm)
    assert fm.outbound_allowed(rule, system, value, target) is expected


@pytest.mark.parametrize("direction, crm, system, value, named, expected", [
    ("hub_always", None, "hubspot", "9", None, False),
    ("crm_always", "salesforce", "hubspot", "x", None, False),
    ("crm_always", "salesforce", "salesforce", "x", None, True),
    ("crm_wins_unless_blank", "salesforce", "hubspot", "x", "held", False),
    ("crm_wins_unless_blank", "salesforce", "hubspot", "x", None, True),
    ("most_recent", None, "hubspot", "", None, False),
    ("two_way", None, "hubspot", None, None, True),
])
def test_inbound_direction_rules(direction, crm, system, value, named, expected):
    rule = fm.FieldRule("title", "jobtitle", "Title", direction, crm=crm)
    assert fm.inbound_allowed(rule, system, value, named) is expected


def test_workspace_override_changes_one_field_and_survives_json():
    settings = fm.set_override({}, "title", "crm_always", "salesforce")
    mapping = fm.load_mapping(json.loads(json.dumps(settings)))
    assert (mapping.rule("title").direction, mapping.rule("title").crm) == ("crm_always", "salesforce")
    assert mapping.rule("first_name").direction == "two_way"


@pytest.mark.parametrize("field, direction, crm", [
    ("nope", "two_way", None), ("title", "sideways", None), ("title", "crm_always", None),
    ("title", "two_way", "hubspot"),
])
def test_invalid_overrides_are_refused(field, direction, crm):
    with pytest.raises(ValueError):
        fm.set_override({}, field, direction, crm)


def test_same_value_compares_canonical_forms():
    assert fm.same_value(MAPPING.rule("phone"), "salesforce", "+1 (415) 555-2671", "+14155552671")
    assert fm.same_value(MAPPING.rule("country"), "hubspot", "Germany", "DE")
    assert not fm.same_value(MAPPING.rule("first_name"), "hubspot", "Ann", "Anne")


def test_employee_count_goes_to_hubspot_bucket_and_salesforce_integer():
    rule = MAPPING.rule("company_size")
    assert fm.outbound_value(rule, "hubspot", 30, MAPPING).value == "25-50"
    assert fm.outbound_value(rule, "salesforce", 30.0, MAPPING).value == 30


def test_crm_to_canonical_skips_hub_owned_and_forward_only_fields():
    got = fm.crm_to_canonical(MAPPING, "salesforce", {"FirstName": "Ann", "Status": "Working - Contacted",
                                                       "Hub_Score__c": 80, "Rating": "Hot"}, "Lead")
    assert got == {"first_name": "Ann"}


def test_mapping_cli_shows_and_overrides_a_direction(runtime, workspace):
    from click.testing import CliRunner

    from hub.cli import main as hub_cli

    ws = workspace["workspace_id"]
    shown = CliRunner().invoke(hub_cli, ["mapping", "show", "--workspace", ws])
    assert shown.exit_code == 0 and "title: jobtitle <-> Title  two_way" in shown.output
    assert "lifecycle_stage: lifecyclestage <-> Status  two_way forward only to salesforce" in shown.output
    changed = CliRunner().invoke(hub_cli, ["mapping", "set", "--workspace", ws, "--field", "title",
                                           "--direction", "crm_always", "--crm", "salesforce", "--json"])
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.output) == {"field": "title", "direction": "crm_always", "crm": "salesforce"}
    rows = json.loads(CliRunner().invoke(hub_cli, ["mapping", "show", "--workspace", ws, "--json"]).output)
    assert next(r for r in rows if r["field"] == "title")["direction"] == "crm_always"
    refused = CliRunner().invoke(hub_cli, ["mapping", "set", "--workspace", ws, "--field", "title",
                                           "--direction", "crm_always"])
    assert refused.exit_code != 0 and "names a CRM" in refused.output
