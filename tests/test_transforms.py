"""Value transforms: hand-written expectations for emails, E.164 phones, names, countries, dates, lengths."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub.exceptions import InvalidValueError
from hub.mappings import transforms


@pytest.mark.parametrize("raw, expected", [
    ("Jane.Doe@Example.COM", "jane.doe@example.com"),
    ("  jane@example.com \n", "jane@example.com"),
    ("mailto:Sales@Acme.io", "sales@acme.io"),
    ("", None),
    ("   ", None),
    (None, None),
])
def test_email_is_trimmed_and_lower_cased(raw, expected):
    assert transforms.email(raw) == expected


@pytest.mark.parametrize("raw", ["jane doe@example.com", "jane@", "@example.com", "jane.example.com",
                                 "jane@@example.com", "jane@example", "jane@exa mple.com"])
def test_invalid_email_raises_with_reason(raw):
    with pytest.raises(InvalidValueError) as caught:
        transforms.email(raw)
    assert caught.value.reason == "invalid_email"


@pytest.mark.parametrize("raw, region, expected", [
    ("(415) 555-2671", "US", "+14155552671"),
    ("415.555.2671", "us", "+14155552671"),
    ("+1 415 555 2671", None, "+14155552671"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+44 20 7946 0958", "DE", "+442079460958"),
    ("07911 123456", "GB", "+447911123456"),
    ("030 901820", "DE", "+4930901820"),
    ("0049 30 901820", None, "+4930901820"),
    ("0151 23456789", "DE", "+4915123456789"),
    ("", "US", None),
])
def test_phone_to_e164(raw, region, expected):
    assert transforms.phone(raw, region) == expected


@pytest.mark.parametrize("raw, region", [("555-2671", None), ("12", "US"), ("not a number", "GB"),
                                         ("+1 000 000 0000", None)])
def test_invalid_phone_raises(raw, region):
    with pytest.raises(InvalidValueError) as caught:
        transforms.phone(raw, region)
    assert caught.value.reason == "invalid_phone"


@pytest.mark.parametrize("raw, expected", [
    ("  Jane \t  Mary  ", "Jane Mary"),
    ("O'Brien", "O'Brien"),
    ("Acme\n Inc.", "Acme Inc."),
    ("   ", None),
])
def test_names_are_trimmed_and_whitespace_collapsed(raw, expected):
    assert transforms.name(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("Germany", "DE"), ("germany", "DE"), ("DE", "DE"), ("deu", "DE"), ("Deutschland", "DE"),
    ("United Kingdom", "GB"), ("UK", "GB"), ("England", "GB"), ("gb", "GB"),
    ("United States", "US"), ("USA", "US"), ("United States of America", "US"), ("us", "US"),
    ("France", "FR"), (" Netherlands ", "NL"), ("Côte d'Ivoire", "CI"), ("", None),
])
def test_country_to_iso_alpha2(raw, expected):
    assert transforms.country(raw) == expected


@pytest.mark.parametrize("raw", ["Atlantis", "XX", "Moon Base"])
def test_unknown_country_raises(raw):
    with pytest.raises(InvalidValueError) as caught:
        transforms.country(raw)
    assert caught.value.reason == "invalid_country"


LEAD_STATUS = {"subscriber": "Open - Not Contacted", "lead": "Open - Not Contacted",
               "marketingqualifiedlead": "Working - Contacted"}


def test_picklist_maps_case_insensitively_and_refuses_unmapped_values():
    assert transforms.picklist("MarketingQualifiedLead", LEAD_STATUS) == "Working - Contacted"
    assert transforms.picklist("lead", LEAD_STATUS) == "Open - Not Contacted"
    assert transforms.picklist("customer", LEAD_STATUS, default="Closed") == "Closed"
    assert transforms.picklist(None, LEAD_STATUS) is None
    with pytest.raises(InvalidValueError):
        transforms.picklist("customer", LEAD_STATUS)


UTC = timezone.utc


@pytest.mark.parametrize("raw, expected", [
    (1764093861002, datetime(2025, 11, 25, 18, 4, 21, 2000, tzinfo=UTC)),        # HubSpot occurredAt (ms)
    ("1764093861", datetime(2025, 11, 25, 18, 4, 21, tzinfo=UTC)),                # epoch seconds
    ("2025-11-25T18:04:21.000+0000", datetime(2025, 11, 25, 18, 4, 21, tzinfo=UTC)),  # Salesforce REST
    ("2025-11-25T18:04:21Z", datetime(2025, 11, 25, 18, 4, 21, tzinfo=UTC)),
    ("2025-11-25T19:04:21+01:00", datetime(2025, 11, 25, 18, 4, 21, tzinfo=UTC)),
    ("2025-11-25", datetime(2025, 11, 25, tzinfo=UTC)),
    ("", None),
])
def test_dates(raw, expected):
    assert transforms.to_datetime(raw) == expected


def test_bad_date_raises():
    with pytest.raises(InvalidValueError):
        transforms.to_datetime("next tuesday")


@pytest.mark.parametrize("raw, limit, expected", [
    ("abcdef", 4, ("abcd", True)), ("abc", 4, ("abc", False)), (None, 4, (None, False)), ("abc", None, ("abc", False)),
])
def test_limit_length_reports_truncation(raw, limit, expected):
    assert transforms.limit_length(raw, limit) == expected


@pytest.mark.parametrize("raw, expected", [(42, 42), ("1,200", 1200), ("51-200", 51), ("1000+", 1000), ("", None)])
def test_integer(raw, expected):
    assert transforms.integer(raw) == expected


@pytest.mark.parametrize("raw, expected", [("true", True), ("Yes", True), ("0", False), (False, False), ("", None)])
def test_boolean(raw, expected):
    assert transforms.boolean(raw) == expected


def test_canonical_dispatches_per_field():
    assert transforms.canonical("email", " A@B.CO ") == "a@b.co"
    assert transforms.canonical("mobile_phone", "0151 23456789", region="DE") == "+4915123456789"
    assert transforms.canonical("country", "germany") == "DE"
    assert transforms.canonical("company_size", "25-50") == 25
    assert transforms.canonical("city", "  New   York ") == "New York"
