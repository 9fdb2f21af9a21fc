"""Owner sync against the loopback HubSpot and Salesforce fakes, through the hub's real webhook routes.

The owner is matched by the user's email (DESIGN.md): Salesforce's OwnerId (a User Id) and
HubSpot's hubspot_owner_id (an owner id) both mean "the CRM user with this email", and the hub's
contact holds that email. The default map makes Salesforce's owner win (`crm_always` Salesforce).
The CRMs' user directories are listed once and kept, so a batch of contacts costs one listing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from hub import defaults
from hub.db import transaction
from hub.models import Contact, SyncLog
from hub.sandbox import validation
from hub.sandbox.common import FakeClock
from hub.sandbox.hubspot_fake import HubSpotFake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, deliver_webhooks, point_runtime_at
from hub.sync import echo
from hub.sync.settings import set_direction
from tests.conftest import run_pipeline
from tests.sync_harness import HUB_URL, post_with

QUEUE_ID = "00G5g000000SaLeSAA"          # a Salesforce queue: it owns records but is no user


@dataclass
class Crms:
    runtime: object
    client: object
    hubspot: HubSpotFake
    salesforce: SalesforceFake
    salesforce_path: str
    hs: dict = field(default_factory=dict)       # rep -> HubSpot owner id
    sf: dict = field(default_factory=dict)       # rep -> Salesforce User Id

    def deliver(self) -> int:
        """Post every pending webhook (HubSpot first), then run the hub's jobs; returns deliveries."""
        self.hubspot.clock.advance(2.0)
        posted = sum(deliver_webhooks(self.hubspot, self.salesforce, post_with(self.client), HUB_URL,
                                      self.salesforce_path).values())
        run_pipeline(self.runtime)
        return posted

    def settle(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            if not self.deliver():
                return
        raise AssertionError("webhooks still flowing: the CRMs ping-pong")

    def lead(self, email: str) -> dict:
        [lead] = self.salesforce.find("Lead", email)
        return lead

    def hubspot_owner(self, email: str) -> str | None:
        return self.hubspot.contact_by_email(email)["values"].get("hubspot_owner_id")

    def owner_writes(self) -> list[str]:
        """Every hubspot_owner_id the hub sent in batch upserts."""
        return [item["properties"]["hubspot_owner_id"]
                for r in self.hubspot.api_requests("/crm/v3/objects/contacts/batch/upsert")
                for item in r.json()["inputs"] if "hubspot_owner_id" in item["properties"]]

    def assert_valid_requests(self) -> None:
        assert validation.hubspot_violations(self.hubspot.requests) == []
        assert validation.salesforce_violations(self.salesforce.requests) == []


@pytest.fixture
def shared_clock(monkeypatch):
    """The hub's clock reads the fakes' clock (NTP in production), as in the sync simulation."""
    clock = FakeClock()
    monkeypatch.setattr(defaults, "SYNC_PUSH_COALESCE_SECONDS", 0.0)
    monkeypatch.setattr(defaults, "SYNC_PUSH_BACKOFF_SECONDS", (0,))
    monkeypatch.setattr(echo, "utcnow", lambda: datetime.fromtimestamp(clock.now(), timezone.utc))
    return clock


@pytest.fixture
def crms(runtime, client, workspace, shared_clock):
    hubspot, salesforce = HubSpotFake(clock=shared_clock), SalesforceFake(clock=shared_clock)
    with serve(hubspot) as hs_server, serve(salesforce) as sf_server:
        point_runtime_at(runtime, hubspot_url=hs_server.url, salesforce_login_url=sf_server.url)
        connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot)
        answer = connect_salesforce_fake(runtime, workspace["workspace_id"], salesforce)
        crms = Crms(runtime, client, hubspot, salesforce, "/" + answer["webhook_url"].split("/", 3)[3])
        # Ann and Ben are users of both CRMs (Salesforce spells Ann's email in capitals);
        # Cy is only a HubSpot owner, Dee only a Salesforce user.
        crms.hs = {"ann": hubspot.add_owner("ann@seller.io", "Ann", "A"),
                   "ben": hubspot.add_owner("ben@seller.io", "Ben", "B"),
                   "cy": hubspot.add_owner("cy@seller.io", "Cy", "C")}
        crms.sf = {"ann": salesforce.add_user("Ann@Seller.io", "Ann", "A"),
                   "ben": salesforce.add_user("ben@seller.io", "Ben", "B"),
                   "dee": salesforce.add_user("dee@seller.io", "Dee", "D")}
        yield crms


def canonical_owner(runtime, email: str) -> str | None:
    with transaction(runtime.engine) as session:
        return session.scalar(select(Contact.owner).where(Contact.email == email))


def sync_log(runtime, operation: str) -> list[SyncLog]:
    with transaction(runtime.engine) as session:
        rows = session.scalars(select(SyncLog).where(SyncLog.operation == operation).order_by(SyncLog.id)).all()
        session.expunge_all()
        return list(rows)


def salesforce_lead(crms: Crms, email: str, owner: str) -> str:
    lead = crms.salesforce.ui_edit("Lead", None, {"Email": email, "LastName": "Doe", "Company": "Acme",
                                                  "OwnerId": owner})
    return lead["Id"]


# --- Salesforce's owner reaches HubSpot ----------------------------------------------------------------

def test_salesforce_owner_becomes_the_hubspot_owner_with_the_same_email(runtime, crms):
    lead_id = salesforce_lead(crms, "pat@buyer.example", crms.sf["ann"])
    crms.settle()
    assert canonical_owner(runtime, "pat@buyer.example") == "ann@seller.io"      # lower-cased
    assert crms.hubspot_owner("pat@buyer.example") == crms.hs["ann"]

    crms.salesforce.ui_edit("Lead", lead_id, {"OwnerId": crms.sf["ben"]})
    crms.settle()
    assert canonical_owner(runtime, "pat@buyer.example") == "ben@seller.io"
    assert crms.hubspot_owner("pat@buyer.example") == crms.hs["ben"]
    assert crms.lead("pat@buyer.example")["OwnerId"] == crms.sf["ben"]
    assert crms.owner_writes() == [crms.hs["ann"], crms.hs["ben"]]                 # once each: echoes died out
    crms.assert_valid_requests()


# --- HubSpot's owner: not written to Salesforce by default, written when the owner syncs two-way ------------

def test_hubspot_owner_edit_is_overruled_by_salesforce_which_owns_the_field(runtime, crms):
    salesforce_lead(crms, "pat@buyer.example", crms.sf["ann"])
    crms.settle()
    crms.hubspot.ui_edit("pat@buyer.example", {"hubspot_owner_id": crms.hs["ben"]})
    crms.settle()
    assert crms.lead("pat@buyer.example")["OwnerId"] == crms.sf["ann"]
    assert not [r for r in crms.salesforce.api_requests() if r.path.endswith("/composite/sobjects")
                for record in r.json()["records"] if "OwnerId" in record]
    assert canonical_owner(runtime, "pat@buyer.example") == "ann@seller.io"
    assert crms.hubspot_owner("pat@buyer.example") == crms.hs["ann"]        # Salesforce's owner is put back
    assert crms.owner_writes() == [crms.hs["ann"], crms.hs["ann"]]
    crms.assert_valid_requests()


def test_hubspot_owner_change_sets_the_salesforce_user_with_the_same_email_when_two_way(runtime, crms, workspace):
    set_direction(runtime, workspace["workspace_id"], "owner", "two_way", None)
    crms.hubspot.ui_edit("pat@buyer.example", {"firstname": "Pat", "lastname": "Doe",
                                               "hubspot_owner_id": crms.hs["ann"]})
    crms.settle()
    assert crms.lead("pat@buyer.example")["OwnerId"] == crms.sf["ann"]             # on the Lead's creation

    crms.hubspot.ui_edit("pat@buyer.example", {"hubspot_owner_id": crms.hs["ben"]})
    crms.settle()
    assert canonical_owner(runtime, "pat@buyer.example") == "ben@seller.io"
    assert crms.lead("pat@buyer.example")["OwnerId"] == crms.sf["ben"]
    assert crms.owner_writes() == []            # HubSpot already holds its own owner: nothing written back
    crms.assert_valid_requests()


def test_conflicting_owner_edits_resolve_to_salesforce(runtime, crms):
    lead_id = salesforce_lead(crms, "pat@buyer.example", crms.sf["ann"])
    crms.settle()
    crms.salesforce.ui_edit("Lead", lead_id, {"OwnerId": crms.sf["ben"]})
    crms.hubspot.clock.advance(5.0)
    crms.hubspot.ui_edit("pat@buyer.example", {"hubspot_owner_id": crms.hs["cy"]})    # the later edit
    crms.settle()
    assert canonical_owner(runtime, "pat@buyer.example") == "ben@seller.io"
    assert crms.lead("pat@buyer.example")["OwnerId"] == crms.sf["ben"]
    assert crms.hubspot_owner("pat@buyer.example") == crms.hs["ben"]


# --- users the other CRM does not have ------------------------------------------------------------

def test_owner_without_a_hubspot_user_is_not_written_and_the_reason_is_logged(runtime, crms, caplog):
    salesforce_lead(crms, "pat@buyer.example", crms.sf["dee"])
    crms.settle()
    assert canonical_owner(runtime, "pat@buyer.example") == "dee@seller.io"
    assert crms.hubspot.contact_by_email("pat@buyer.example") is not None              # the contact is written
    assert crms.hubspot_owner("pat@buyer.example") is None and crms.owner_writes() == []
    [note] = sync_log(runtime, "push.owner")
    assert (note.target, note.status) == ("hubspot", "skipped")
    assert note.error == "no hubspot user with the email d***@seller.io: owner not written"
    assert "dee@seller.io" not in caplog.text


def test_without_the_owners_scope_contacts_still_sync_and_the_owner_is_noted_once_per_push(runtime, crms):
    crms.hubspot.owners_scope = False
    for n in range(3):
        salesforce_lead(crms, f"p{n}@buyer.example", crms.sf["ann"])
    crms.settle()
    assert all(crms.hubspot.contact_by_email(f"p{n}@buyer.example") for n in range(3))
    assert crms.owner_writes() == []
    assert len(crms.hubspot.owner_requests()) == 1        # a refused listing is not tried again at once
    notes = sync_log(runtime, "push.owner")
    assert len(notes) == 3 and {n.error for n in notes} == {
        "the hubspot user directory is unavailable: owner not written"}


def test_owner_id_that_is_no_user_leaves_the_owner_unchanged_and_is_noted(runtime, crms):
    lead_id = salesforce_lead(crms, "pat@buyer.example", crms.sf["ann"])
    crms.settle()
    crms.salesforce.ui_edit("Lead", lead_id, {"OwnerId": QUEUE_ID, "Title": "CTO"})
    crms.settle()
    with transaction(runtime.engine) as session:
        contact = session.scalar(select(Contact).where(Contact.email == "pat@buyer.example"))
        assert (contact.owner, contact.title) == ("ann@seller.io", "CTO")       # the rest of the change applies
    notes = sync_log(runtime, "owner.unknown")     # once per message that still names the queue
    assert notes and {(n.target, n.status, tuple(n.object_ids)) for n in notes} == {
        ("salesforce", "decision", (lead_id, QUEUE_ID))}
    assert crms.hubspot_owner("pat@buyer.example") == crms.hs["ann"]


def test_records_the_hub_created_are_not_owned_by_its_integration_user(runtime, crms):
    crms.hubspot.ui_edit("pat@buyer.example", {"firstname": "Pat", "lastname": "Doe"})
    crms.settle()
    assert crms.lead("pat@buyer.example")["OwnerId"] == crms.salesforce.integration_user
    assert canonical_owner(runtime, "pat@buyer.example") is None
    assert sync_log(runtime, "owner.unknown") == []


# --- the directories are listed once -----------------------------------------------------------------

def test_a_batch_of_contacts_costs_one_directory_listing_per_crm(runtime, crms):
    for n in range(6):
        salesforce_lead(crms, f"p{n}@buyer.example", crms.sf["ann" if n % 2 else "ben"])
    crms.settle()
    assert len(crms.salesforce.user_queries()) == 1       # inbound: Salesforce User Ids -> emails
    assert len(crms.hubspot.owner_requests()) == 1        # outbound: emails -> HubSpot owner ids
    assert {crms.hubspot_owner(f"p{n}@buyer.example") for n in range(6)} == {crms.hs["ann"], crms.hs["ben"]}

    for n in range(6):
        crms.salesforce.ui_edit("Lead", crms.lead(f"p{n}@buyer.example")["Id"], {"OwnerId": crms.sf["dee"]})
    crms.settle()
    assert len(crms.salesforce.user_queries()) == 1       # still the kept listing
    assert len(crms.hubspot.owner_requests()) == 1        # Dee has no HubSpot owner: no listing per contact
    assert len(sync_log(runtime, "push.owner")) == 6
    crms.assert_valid_requests()


def test_an_unknown_user_triggers_one_refresh_that_finds_a_new_user(runtime, crms, monkeypatch):
    lead_id = salesforce_lead(crms, "pat@buyer.example", crms.sf["ann"])
    crms.settle()
    assert len(crms.salesforce.user_queries()) == 1
    monkeypatch.setattr(defaults, "OWNER_DIRECTORY_REFRESH_SECONDS", 0)
    eve = crms.salesforce.add_user("eve@seller.io", "Eve", "E")          # hired after the listing
    eve_in_hubspot = crms.hubspot.add_owner("eve@seller.io", "Eve", "E")
    crms.salesforce.ui_edit("Lead", lead_id, {"OwnerId": eve})
    crms.settle()
    assert canonical_owner(runtime, "pat@buyer.example") == "eve@seller.io"
    assert len(crms.salesforce.user_queries()) == 2                      # one refresh
    assert len(crms.hubspot.owner_requests()) == 2                       # Eve was unknown there too: one refresh
    assert crms.hubspot_owner("pat@buyer.example") == eve_in_hubspot
