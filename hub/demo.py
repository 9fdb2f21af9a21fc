"""`hub demo`: the whole loop against sandbox CRMs, in one process, with nothing to install.

Owns the demo script. It starts the sandbox HubSpot and Salesforce (hub/sandbox) on loopback ports,
a fresh hub on the embedded default (SQLite + embedded Redis in a temporary folder) serving its real
receiver on a loopback port, connects a workspace to both sandboxes, adds two sales reps, and then:
1. posts a signed demo-request form (Standard Webhooks) for a VP at a 500-person company;
2. runs the relay and worker: the lead is scored, graded, becomes an MQL and is handed to a rep;
   both CRMs show it with owner, task, score, grade and reasons;
3. a rep edits the title in Salesforce: the sandbox sends its Outbound Message to the hub, which
   writes HubSpot;
4. a marketer edits the phone in HubSpot: the signed webhook reaches the hub, which writes Salesforce;
5. the echoes of the hub's own writes come back and cause no write (no ping-pong).
Every step is checked; the demo exits 1 when a check fails, so it doubles as a smoke test.
"""
from __future__ import annotations

import base64
import json
import secrets
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from hub import admin, defaults
from hub.db import transaction
from hub.migrate import upgrade
from hub.models import Rep, SyncLog, utcnow
from hub.redis_conn import EmbeddedRedisServer
from hub.runtime import Runtime
from hub.sandbox.hubspot_fake import HubSpotFake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.signing import standard_webhook_headers
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, deliver_webhooks
from hub.settings import Settings
from hub.sync import jobs
from hub.sync.worker import run_until_settled

REQUEST_TIMEOUT_SECONDS = 10
# (email, HubSpot owner id, Salesforce User id) of the sandbox sales team
REPS = (("alice@seller.example", "111", "0055g00000ALICEAAA"), ("bob@seller.example", "222", "0055g00000BOBBBAAA"))
LEAD_EMAIL = "vp@bigco.example"
# second-precision LastModifiedDate + SYNC_ORDER_TOLERANCE_SECONDS: an edit closer than this to the hub's write is ambiguous
SALESFORCE_AMBIGUOUS_SECONDS = 1.0 + defaults.SYNC_ORDER_TOLERANCE_SECONDS + 0.1


class DemoFailed(Exception):
    """A step did not show what it should: the loop is broken."""


@dataclass
class Demo:
    runtime: Runtime
    hub_url: str
    workspace_id: str
    hubspot: HubSpotFake
    salesforce: SalesforceFake
    form_path: str
    form_secret: str
    salesforce_path: str
    say: Callable[[str], None]
    webhooks_posted: dict = field(default_factory=lambda: {"hubspot": 0, "salesforce": 0})

    # --- the wire ------------------------------------------------------------------------------

    def post(self, path: str, body: bytes, headers: dict) -> int:
        request = urllib.request.Request(self.hub_url + path, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return response.status

    def deliver_webhooks(self) -> int:
        """Post what the sandboxes would send (HubSpot webhooks, Salesforce Outbound Messages) to the hub."""
        def post(path: str, body: bytes, headers: dict) -> None:
            self._expect_ok(self.post(path, body, headers), f"the webhook to {path}")

        posted = deliver_webhooks(self.hubspot, self.salesforce, post, self.hub_url, self.salesforce_path)
        for system, count in posted.items():
            self.webhooks_posted[system] += count
        return sum(posted.values())

    def cycle(self) -> float:
        """Deliver webhooks and run relay + worker until the CRMs stop answering back; seconds taken."""
        started = time.monotonic()
        for _ in range(10):
            run_until_settled(self.runtime)
            if not self.deliver_webhooks():
                return time.monotonic() - started
        raise DemoFailed("the CRMs kept sending changes back: a sync loop")

    @staticmethod
    def _expect_ok(status: int, what: str) -> None:
        if status != 200:
            raise DemoFailed(f"{what} answered {status}")

    # --- the steps ------------------------------------------------------------------------------

    def submit_demo_form(self) -> None:
        body = json.dumps(demo_form_submission(LEAD_EMAIL)).encode()
        headers = standard_webhook_headers(self.form_secret, f"msg_{secrets.token_hex(8)}", body)
        self._expect_ok(self.post(self.form_path, body, headers), "the form post")
        self.say(f"1. {LEAD_EMAIL} (VP Marketing, 500 employees) submits the demo-request form: 200, stored")

    def show_mql(self, seconds: float) -> None:
        contact = self._hubspot_contact()
        values = contact["values"]
        [lead] = self.salesforce.find("Lead", LEAD_EMAIL) or [None]
        if lead is None:
            raise DemoFailed("no Salesforce Lead was created")
        hs_tasks = [t for t in self.hubspot.tasks.values()
                    if any(str(a["to"]["id"]) == str(contact["id"]) for a in t.get("associations", []))]
        sf_tasks = [t for t in self.salesforce.records["Task"].values() if t.get("WhoId") == lead["Id"]]
        self.say(f"2. one worker cycle ({seconds:.1f} s):")
        self.say(f"   HubSpot contact {contact['id']}: lifecyclestage={values.get('lifecyclestage')} "
                 f"owner={values.get('hubspot_owner_id')} hub_score={values.get('hub_score')} "
                 f"hub_grade={values.get('hub_grade')} reasons={values.get('hub_score_reasons')!r} "
                 f"tasks={[t['properties'].get('hs_task_status') for t in hs_tasks]}")
        self.say(f"   Salesforce Lead {lead['Id']}: Status={lead.get('Status')!r} OwnerId={lead.get('OwnerId')} "
                 f"Hub_Score__c={lead.get('Hub_Score__c')} Hub_Grade__c={lead.get('Hub_Grade__c')} "
                 f"Hub_Score_Reasons__c={lead.get('Hub_Score_Reasons__c')!r} "
                 f"tasks={[t.get('Status') for t in sf_tasks]}")
        checks = {
            "HubSpot lifecycle stage is MQL": values.get("lifecyclestage") == "marketingqualifiedlead",
            "HubSpot contact has an owner": bool(values.get("hubspot_owner_id")),
            "HubSpot contact has a score, grade and reasons": all(
                values.get(name) for name in ("hub_score", "hub_grade", "hub_score_reasons")),
            "HubSpot has an open task": any(t["properties"].get("hs_task_status") == "NOT_STARTED" for t in hs_tasks),
            "Salesforce Lead is being worked": lead.get("Status") == "Working - Contacted",
            "Salesforce Lead is owned by a rep": lead.get("OwnerId") in {user for _, _, user in REPS},
            "Salesforce Lead has a score and grade": bool(lead.get("Hub_Score__c") and lead.get("Hub_Grade__c")),
            "Salesforce has an open task": any(t.get("Status") == "Not Started" for t in sf_tasks),
        }
        _require(checks)

    def edit_in_salesforce(self) -> None:
        [lead] = self.salesforce.find("Lead", LEAD_EMAIL)
        self._after_the_hubs_last_salesforce_write()
        before = self.writes()
        self.salesforce.ui_edit("Lead", lead["Id"], {"Title": "Chief Marketing Officer"})
        seconds = self.cycle()
        title = self._hubspot_contact()["values"].get("jobtitle")
        self.say(f"3. a rep sets Title in Salesforce -> Outbound Message -> HubSpot jobtitle={title!r} ({seconds:.1f} s)")
        _require({"HubSpot shows the Salesforce edit": title == "Chief Marketing Officer"})
        self._require_one_way(before, written="hubspot", echoed="salesforce")

    def edit_in_hubspot(self) -> None:
        before = self.writes()
        self.hubspot.ui_edit(LEAD_EMAIL, {"phone": "+12025550123"})
        seconds = self.cycle()
        [lead] = self.salesforce.find("Lead", LEAD_EMAIL)
        self.say(f"4. a marketer sets phone in HubSpot -> webhook -> Salesforce Phone={lead.get('Phone')!r} "
                 f"({seconds:.1f} s)")
        _require({"Salesforce shows the HubSpot edit": lead.get("Phone") == "+12025550123"})
        self._require_one_way(before, written="salesforce", echoed="hubspot")

    def _after_the_hubs_last_salesforce_write(self) -> None:
        """A rep edits a little later. Salesforce stamps edits to the second: an edit within
        SALESFORCE_AMBIGUOUS_SECONDS of the hub's own write to that field cannot be ordered against it,
        and the hub then writes its value again to be sure (hub.sync.echo); a real rep is slower."""
        writes = [r.at for r in self.salesforce.api_requests() if r.path.endswith("/composite/sobjects")]
        if writes:
            time.sleep(max(0.0, max(writes) + SALESFORCE_AMBIGUOUS_SECONDS - self.salesforce.clock.now()))

    def writes(self) -> dict[str, int]:
        """Record writes the hub has sent to each sandbox so far (batch upserts / sObject Collections)."""
        return {"hubspot": len(self.hubspot.api_requests("/crm/v3/objects/contacts/batch/upsert")),
                "salesforce": sum(1 for r in self.salesforce.api_requests()
                                  if r.path.endswith("/composite/sobjects") and r.method in ("POST", "PATCH"))}

    def _require_one_way(self, before: dict[str, int], written: str, echoed: str) -> None:
        """One write to the other CRM; its echo (the webhook of the hub's own write) wrote nothing back."""
        after = self.writes()
        self.say(f"   writes: {after[written] - before[written]} to {written}, {after[echoed] - before[echoed]} "
                 f"back to {echoed} (the echo was recognised)")
        _require({f"one write to {written}": after[written] - before[written] == 1,
                  f"no write back to {echoed}": after[echoed] == before[echoed]})

    def show_traffic(self) -> None:
        with transaction(self.runtime.engine) as session:
            calls = {target: session.query(SyncLog).filter(SyncLog.workspace_id == self.workspace_id,
                                                           SyncLog.target == target).count()
                     for target in ("hubspot", "salesforce")}
        self.say(f"5. quiet: {self.webhooks_posted['hubspot']} HubSpot webhooks and "
                 f"{self.webhooks_posted['salesforce']} Outbound Messages reached the hub and nothing is left "
                 f"bouncing; sync_log holds {calls['hubspot']} HubSpot and {calls['salesforce']} Salesforce rows "
                 f"(one per call or decision: `hub` keeps every write traceable)")

    def _hubspot_contact(self) -> dict:
        contact = self.hubspot.contact_by_email(LEAD_EMAIL)
        if contact is None:
            raise DemoFailed("no HubSpot contact was created")
        return contact


def _require(checks: dict[str, bool]) -> None:
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise DemoFailed("; ".join(failed))


def demo_form_submission(email: str) -> dict:
    """A generic form submission in DESIGN.md's format: a VP at a 500-person company asks for a demo."""
    return {"type": "form.submitted", "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
            "data": {"form": "demo-request", "email": email, "first_name": "Victoria", "last_name": "Park",
                     "phone": "+1 202 555 0199", "company": "BigCo", "company_size": 500,
                     "title": "VP Marketing", "country": "US", "consent": {"email": True},
                     "fields": {"use_case": "lead routing"}}}


def demo_runtime(instance_dir: str, redis_url: str, hubspot_url: str, salesforce_url: str) -> Runtime:
    """A fresh embedded hub in `instance_dir`, whatever HUB_* variables the shell has set."""
    settings = Settings.from_env({
        "HUB_INSTANCE_DIR": instance_dir, "HUB_DATABASE_URL": "", "HUB_ENCRYPTION_KEYS": "", "HUB_PUBLIC_URL": "",
        "HUB_REDIS_URL": redis_url,
        "HUBSPOT_API_BASE": hubspot_url, "SALESFORCE_LOGIN_URL": salesforce_url})
    upgrade(settings.database_url)
    return Runtime(settings)


def add_reps(runtime: Runtime, workspace_id: str) -> None:
    with transaction(runtime.engine) as session:
        for email, owner_id, user_id in REPS:
            session.add(Rep(workspace_id=workspace_id, email=email, weight=1.0, active=True, rr_credit=0.0,
                            hubspot_owner_id=owner_id, salesforce_user_id=user_id))


def set_up(stack: ExitStack, say: Callable[[str], None]) -> Demo:
    from hub.app import create_app

    hubspot, salesforce = HubSpotFake(), SalesforceFake()
    for email, owner_id, user_id in REPS:            # the sales team are users of both CRMs
        first_name = email.split("@")[0].title()
        hubspot.add_owner(email, first_name, "Seller", owner_id=owner_id)
        salesforce.add_user(email, first_name, "Seller", user_id=user_id)
    hs_server, sf_server = stack.enter_context(serve(hubspot)), stack.enter_context(serve(salesforce))
    instance_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hub-demo-"))
    redis_server = EmbeddedRedisServer(instance_dir)
    redis_server.start()
    stack.callback(redis_server.stop)
    runtime = demo_runtime(instance_dir, redis_server.url, hs_server.url, sf_server.url)
    stack.callback(runtime.engine.dispose)
    jobs.use_runtime(runtime)                    # the worker runs in this process, on this runtime
    stack.callback(jobs.use_runtime, None)
    hub_server = stack.enter_context(serve(create_app(runtime=runtime)))
    workspace_id = admin.create_workspace(runtime, "demo")["workspace_id"]
    connect_hubspot_fake(runtime, workspace_id, hubspot)
    salesforce_answer = connect_salesforce_fake(runtime, workspace_id, salesforce, hub_fields=True)
    form_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    form_answer = admin.add_source(runtime, workspace_id, "generic", form_secret)
    add_reps(runtime, workspace_id)
    say(f"lead hub demo: hub {hub_server.url} (SQLite + embedded Redis in {instance_dir}), "
        f"sandbox HubSpot {hs_server.url}, sandbox Salesforce {sf_server.url}")
    return Demo(runtime, hub_server.url, workspace_id, hubspot, salesforce,
                form_path=urlsplit(form_answer["webhook_url"]).path, form_secret=form_secret,
                salesforce_path=urlsplit(salesforce_answer["webhook_url"]).path, say=say)


def run(say: Callable[[str], None] = print) -> int:
    """The demo; 0 when every step showed what it should, 1 otherwise (the reason is printed)."""
    with ExitStack() as stack:
        demo = set_up(stack, say)
        try:
            demo.submit_demo_form()
            demo.show_mql(demo.cycle())
            demo.edit_in_salesforce()
            demo.edit_in_hubspot()
            demo.show_traffic()
        except DemoFailed as exc:
            say(f"demo FAILED: {exc}")
            return 1
    say("demo OK: form -> canonical contact -> score, grade, MQL -> owner, task -> both CRMs, and edits "
        "flow both ways without loops")
    return 0
