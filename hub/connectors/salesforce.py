"""Salesforce CRM client (Lead and Contact) on simple-salesforce: upsert by email without duplicates,
changes by SystemModstamp cursor, deleted records (Get Deleted), deletes (sObject Collections),
describe, follow-up tasks, and the org's API allowance.

Declarative part: API version, batch size, the person objects and the fields read are class
attributes. A person is a Lead until converted, then a Contact: writes look people up by email
first (`SELECT ... WHERE Email IN (...)` on Lead and Contact, batched) and update what exists —
the Contact when there is one (a converted Lead's ConvertedContactId) — and create a Lead
otherwise, through sObject Collections (≤200, allOrNone=false, so one bad record fails alone).
A Lead's required Company/LastName are written as `[not provided]` when blank.

Every call goes through `CrmConnector._call` (the API reserve check, bounded retries, one token
refresh on INVALID_SESSION_ID, sync_log) with a timeout. `Sforce-Limit-Info: api-usage=N/M` is read
from every answer and kept in Redis (hub.sync.ratelimit.ApiReserve). REQUEST_LIMIT_EXCEEDED is a
403 and is retriable only after a long wait.

Construct through the registry: `registry.connector_for(runtime, workspace_id, "salesforce")`.
Directly (tests): `SalesforceConnector(StaticTokens("tok", instance_url="http://127.0.0.1:8124"))`.
simple-salesforce builds https:// URLs from the instance host; the connector sets `sf.base_url`
from the instance URL as given, so http:// sandboxes work.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import redis
import requests
from marshmallow import INCLUDE, Schema, fields
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError

from hub import defaults
from hub.connectors.base import (
    CallInfo,
    ChangePage,
    CrmConnector,
    CrmRecord,
    CrmUser,
    TaskSpec,
    TaskState,
    WriteResult,
    chunks,
    retry_delay,
    retry_now,
)
from hub.exceptions import FatalError, RetriableError, TokenExpiredError

logger = logging.getLogger(__name__)

PERSON_FIELDS = ("Id", "Email", "FirstName", "LastName", "Phone", "MobilePhone", "Title", "OwnerId",
                 "LastModifiedDate", "LastModifiedById", "SystemModstamp", "CreatedDate")
LEAD_FIELDS = PERSON_FIELDS + ("Company", "Country", "State", "City", "Website", "NumberOfEmployees", "Industry",
                               "Status", "IsConverted", "ConvertedContactId")
CONTACT_FIELDS = PERSON_FIELDS + ("MailingCountry", "MailingState", "MailingCity", "AccountId", "Account.Name")
HUB_FIELDS = ("Hub_Score__c", "Hub_Grade__c", "Hub_Score_Reasons__c")
# Lead field -> Contact field, for writes that land on a converted person's Contact
LEAD_TO_CONTACT = {"Country": "MailingCountry", "State": "MailingState", "City": "MailingCity"}
LEAD_ONLY = frozenset({"Company", "Status", "Website", "NumberOfEmployees", "Industry", "LeadSource", "Rating",
                       "IsConverted", "ConvertedContactId"})
READ_ONLY = frozenset({"Id", "LastModifiedDate", "LastModifiedById", "SystemModstamp", "CreatedDate", "IsConverted",
                       "ConvertedContactId", "AccountId", "Account.Name"})
REQUIRED_PLACEHOLDERS = {"Lead": ("LastName", "Company"), "Contact": ("LastName",)}
TASK_PRIORITY = {"HIGH": "High", "MEDIUM": "Normal", "LOW": "Low"}
# Task.Status standard picklist: Not Started, In Progress, Completed, Waiting on someone else, Deferred;
# whether a status means done is the org's TaskStatus.IsClosed, read as Task.IsClosed.
TASK_DEFERRED = "Deferred"
TASK_READ_FIELDS = ("Id", "Status", "IsClosed", "Description")
EPOCH = "1970-01-01T00:00:00.000+0000"
USER_SOQL = "SELECT Id, Email FROM User WHERE IsActive = true ORDER BY Id"


class DescribeCache:
    """Field names per object from `sobjects/<Object>/describe`, kept in Redis for a while."""

    def __init__(self, conn, org_key: str, ttl: int = defaults.SALESFORCE_DESCRIBE_TTL_SECONDS):
        self.conn = conn
        self.org_key = org_key
        self.ttl = ttl
        self._local: dict[str, set[str]] = {}

    def _key(self, object_type: str) -> str:
        return f"hub:sf-describe:{self.org_key}:{object_type}"

    def get(self, object_type: str) -> set[str] | None:
        if object_type in self._local:
            return self._local[object_type]
        try:
            value = self.conn.get(self._key(object_type))
        except redis.RedisError:
            return None
        if value:
            self._local[object_type] = set(json.loads(value))
        return self._local.get(object_type)

    def put(self, object_type: str, names: set[str]) -> None:
        self._local[object_type] = set(names)
        try:
            self.conn.set(self._key(object_type), json.dumps(sorted(names)), ex=self.ttl)
        except redis.RedisError as exc:
            logger.warning("could not cache Salesforce describe: %s", type(exc).__name__)


class SalesforceCredentials(Schema):
    """Connection.credentials of a Salesforce connection (secret fields are never logged)."""

    class Meta:
        unknown = INCLUDE

    access_token = fields.String(required=True, metadata={"secret": True})
    refresh_token = fields.String(load_default=None, metadata={"secret": True})
    client_id = fields.String(load_default=None)
    client_secret = fields.String(load_default=None, metadata={"secret": True})
    instance_url = fields.Url(load_default=None, schemes={"https", "http"}, require_tld=False)
    issued_at = fields.String(load_default=None)


class SalesforceConnector(CrmConnector):
    kind = "salesforce"
    api_version = defaults.SALESFORCE_API_VERSION
    batch_size = defaults.SALESFORCE_BATCH_SIZE
    lookup_batch = defaults.SALESFORCE_LOOKUP_BATCH
    person_objects = ("Lead", "Contact")
    replication_key = "SystemModstamp"
    fields_by_object = {"Lead": LEAD_FIELDS, "Contact": CONTACT_FIELDS}
    credentials_schema = SalesforceCredentials

    def __init__(self, tokens, *, reserve=None, hub_fields: bool = False, describe_cache=None,
                 clock: Callable[[], datetime] | None = None, **kwargs):
        """`tokens` gives access_token()/instance_url()/refresh(); `reserve` is an ApiReserve.

        `hub_fields`: also read Hub_Score__c, Hub_Grade__c, Hub_Score_Reasons__c (they exist only
        once an admin created them; see ensure_hub_fields).
        `describe_cache` (a DescribeCache): check field names against the org's describe, so that
        fields the org lacks (e.g. the hub's custom fields before an admin made them) are left out
        of queries and writes instead of failing every call with INVALID_FIELD.
        """
        super().__init__(tokens, limiter=kwargs.pop("limiter", reserve), **kwargs)
        self.reserve = reserve
        self.hub_fields = hub_fields
        self.describe_cache = describe_cache
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._sf: Salesforce | None = None
        self._sf_key: tuple[str, str] | None = None
        self._last = threading.local()
        self.http = requests.Session()
        self.http.hooks["response"].append(self._observe_response)

    # --- simple-salesforce plumbing ----------------------------------------------------------------

    def _client(self, token: str) -> Salesforce:
        instance_url = self.tokens.instance_url().rstrip("/")
        if self._sf is None or self._sf_key != (token, instance_url):
            sf = Salesforce(instance_url=instance_url, session_id=token, version=self.api_version,
                            session=self.http)
            # simple-salesforce assumes https://<host>; use the instance URL exactly as connected
            sf.base_url = f"{instance_url}/services/data/v{self.api_version}/"
            sf.apex_url = f"{instance_url}/services/apexrest/"
            sf.headers.pop("X-PrettyPrint", None)
            sf.headers["Sforce-Call-Options"] = f"client={defaults.SALESFORCE_CALL_CLIENT}"
            self._sf, self._sf_key = sf, (token, instance_url)
        return self._sf

    def _observe_response(self, response: requests.Response, *args, **kwargs) -> None:
        """requests hook: every answer (errors included) reports the org's API usage."""
        self._last.headers = response.headers
        if self.reserve is not None:
            self.reserve.observe(response.headers.get("Sforce-Limit-Info"))

    def _rest(self, info: CallInfo, token: str, path: str, method: str = "GET", **kwargs) -> Any:
        """One REST call relative to /services/data/vXX.X/; errors classified here."""
        self._last.headers = None
        call_id = uuid.uuid4().hex
        info.request_id = f"{defaults.SALESFORCE_CALL_CLIENT}:{call_id}"
        try:
            result = self._client(token).restful(path, method=method, timeout=self.timeout,
                                                 headers={"X-Hub-Call-Id": call_id}, **kwargs)
        except SalesforceError as exc:
            info.http_status = exc.status
            raise classify_error(exc.status, exc.content, self._last.headers) from exc
        except requests.RequestException as exc:
            raise RetriableError(f"Salesforce unreachable: {type(exc).__name__}") from exc
        info.http_status = 204 if result is None else 200
        return result

    # --- writes ----------------------------------------------------------------------------------

    def batch_upsert(self, records: list[CrmRecord]) -> list[WriteResult]:
        """Update the people who exist (by id, else by email), create Leads for the others.

        Results come back in input order, keyed by the record id, else the email as given.
        """
        by_email: dict[str, CrmRecord] = {}
        keys: dict[str, str] = {}                               # lower-case email -> the caller's key
        planned: list[tuple[str, str, str | None, dict]] = []   # (key, object, id, fields)
        order: list[str | None] = []
        for record in records:
            if record.id:
                planned.append((record.id, record.object_type, record.id, dict(record.properties)))
                order.append(record.id)
                continue
            email = (record.properties.get("Email") or "").strip()
            if not email:
                order.append(None)
                continue
            keys.setdefault(email.lower(), email)
            order.append(keys[email.lower()])
            merged = by_email.setdefault(email.lower(), CrmRecord(record.object_type, None, {}))
            merged.properties.update(record.properties)
        existing = self.find_by_email(list(by_email)) if by_email else {}
        for email, record in by_email.items():
            found = existing.get(email)
            if found is None:
                planned.append((keys[email], "Lead", None, record.properties))
            else:
                planned.append((keys[email], found.object_type, found.id, record.properties))
        results = self._retry_duplicates(self._write_planned(planned), by_email, keys)
        by_key = {r.key: r for r in results}
        missing = WriteResult(key="", id=None, ok=False, error_code="MISSING_EMAIL",
                              error_message="a Salesforce upsert needs an Email or an Id")
        return [by_key[key] if key is not None else missing for key in order]

    def _write_planned(self, planned: list[tuple[str, str, str | None, dict]]) -> list[WriteResult]:
        creates = [(key, obj, None, self._known(obj, prepare_fields(obj, fields, creating=True)))
                   for key, obj, record_id, fields in planned if record_id is None]
        updates = [(key, obj, record_id, self._known(obj, prepare_fields(obj, fields, creating=False)))
                   for key, obj, record_id, fields in planned if record_id is not None]
        results: list[WriteResult] = []
        for batch in chunks(creates, self.batch_size):
            results.extend(self._create(batch))
        for batch in chunks(updates, self.batch_size):
            results.extend(self._collection_call("PATCH", batch))
        return results

    def _create(self, batch: list[tuple[str, str, str | None, dict]]) -> list[WriteResult]:
        """Create, never twice: a create is not idempotent, so before trying again after a failure
        that may have been applied (timeout, 5xx), look the people up and update those found."""
        results: list[WriteResult] = []
        for attempt in range(1, defaults.RETRY_MAX_ATTEMPTS + 1):
            try:
                return results + self._collection_call("POST", batch, retry=False)
            except RetriableError as exc:
                if attempt == defaults.RETRY_MAX_ATTEMPTS or not retry_now(exc):
                    raise
                self.sleep(retry_delay(exc, attempt))
            found = self.find_by_email([key for key, *_rest in batch])
            applied = [(key, found[key.lower()].object_type, found[key.lower()].id, fields)
                       for key, _obj, _id, fields in batch if key.lower() in found]
            batch = [item for item in batch if item[0].lower() not in found]
            if applied:
                updated = self._collection_call("PATCH", [(k, o, i, prepare_fields(o, f, creating=False))
                                                          for k, o, i, f in applied])
                results.extend(replace(r, created=True) for r in updated)
            if not batch:
                return results
        return results

    def _collection_call(self, method: str, batch: list[tuple[str, str, str | None, dict]],
                         retry: bool = True) -> list[WriteResult]:
        records = []
        for _key, obj, record_id, fields in batch:
            record = {"attributes": {"type": obj}, **fields}
            if record_id:
                record["id"] = record_id
            records.append(record)
        body = {"allOrNone": False, "records": records}
        operation = "sobjects.create" if method == "POST" else "sobjects.update"

        def send(token: str, info: CallInfo):
            saved = self._rest(info, token, "composite/sobjects", method=method, data=json.dumps(body))
            if any(not row.get("success") for row in saved or []):
                info.status = "partial"
            info.object_ids = [row["id"] for row in saved or [] if row.get("id")]
            return saved

        saved = self._call(operation, [record_id or "" for _k, _o, record_id, _f in batch if record_id], send,
                           retry=retry)
        return [save_result(key, obj, record_id, row)
                for (key, obj, record_id, _fields), row in zip(batch, saved or [])]

    def batch_delete(self, object_type: str, ids: list[str]) -> list[WriteResult]:
        """Delete records by id through sObject Collections (≤200 per call, allOrNone=false): DeleteResults
        come back in request order; one that cannot be deleted fails alone (ENTITY_IS_DELETED: gone already)."""
        results: list[WriteResult] = []
        for batch in chunks(list(dict.fromkeys(str(i) for i in ids)), self.batch_size):
            def send(token: str, info: CallInfo, batch=batch):
                deleted = self._rest(info, token, "composite/sobjects", method="DELETE",
                                     params={"ids": ",".join(batch), "allOrNone": "false"})
                if any(not row.get("success") for row in deleted or []):
                    info.status = "partial"
                return deleted

            deleted = self._call("sobjects.delete", batch, send)
            results.extend(save_result(record_id, object_type, record_id, row)
                           for record_id, row in zip(batch, deleted or []))
        return results

    def _retry_duplicates(self, results: list[WriteResult], by_email: dict[str, CrmRecord],
                          keys: dict[str, str]) -> list[WriteResult]:
        """A create refused as a duplicate (someone created the person meanwhile): update it instead."""
        emails = {key.lower(): key for key in keys.values()}
        duplicates = [r.key.lower() for r in results
                      if not r.ok and r.error_code == "DUPLICATES_DETECTED" and r.key.lower() in emails]
        if not duplicates:
            return results
        found = self.find_by_email(duplicates)
        retry = [(emails[email], found[email].object_type, found[email].id, by_email[email].properties)
                 for email in duplicates if email in found]
        retried = {r.key: r for r in self._write_planned(retry)}
        return [retried.get(r.key, r) for r in results]

    # --- reads ----------------------------------------------------------------------------------

    def find_by_email(self, emails: list[str]) -> dict[str, CrmRecord]:
        """email -> the person's current record: a Contact, else an open Lead, else a converted Lead's Contact."""
        wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
        contacts: dict[str, CrmRecord] = {}
        leads: dict[str, CrmRecord] = {}
        for batch in chunks(wanted, self.lookup_batch):
            in_list = soql_in(batch)
            for record in self._query_all("Contact", f"Email IN ({in_list})", "ORDER BY LastModifiedDate DESC"):
                contacts.setdefault(_email(record), record)
            for record in self._query_all("Lead", f"Email IN ({in_list})", "ORDER BY LastModifiedDate DESC"):
                current = leads.get(_email(record))
                if current is None or (current.properties.get("IsConverted") and not record.properties.get("IsConverted")):
                    leads[_email(record)] = record
        found: dict[str, CrmRecord] = {}
        converted_ids: dict[str, str] = {}
        for email in wanted:
            lead = leads.get(email)
            if email in contacts:
                found[email] = contacts[email]
            elif lead is not None and not lead.properties.get("IsConverted"):
                found[email] = lead
            elif lead is not None and lead.properties.get("ConvertedContactId"):
                converted_ids[email] = lead.properties["ConvertedContactId"]
        if converted_ids:
            followed = self.read_by_ids("Contact", list(converted_ids.values()))
            found.update({email: followed[cid] for email, cid in converted_ids.items() if cid in followed})
        return found

    def read_by_ids(self, object_type: str, ids: list[str]) -> dict[str, CrmRecord]:
        found: dict[str, CrmRecord] = {}
        for batch in chunks(list(dict.fromkeys(ids)), self.lookup_batch):
            for record in self._query_all(object_type, f"Id IN ({soql_in(batch)})", ""):
                found[record.id] = record
        return found

    def _fields(self, object_type: str) -> tuple[str, ...]:
        fields = self.fields_by_object[object_type]
        if self.describe_cache is None:
            return fields + HUB_FIELDS if self.hub_fields else fields
        names = self._org_fields(object_type)
        return tuple(f for f in fields + HUB_FIELDS if f.split(".")[0] in names or f == "Account.Name")

    def _org_fields(self, object_type: str) -> set[str]:
        names = self.describe_cache.get(object_type)
        if names is None:
            names = set(self.describe_fields(object_type)) | {"Account"}
            self.describe_cache.put(object_type, names)
        return names

    def _known(self, object_type: str, fields: dict) -> dict:
        """Leave out fields the org does not have (only when describe checking is on)."""
        if self.describe_cache is None:
            return fields
        names = self._org_fields(object_type)
        unknown = sorted(set(fields) - names)
        if unknown:
            logger.warning("Salesforce %s has no field(s) %s; not written", object_type, ", ".join(unknown))
        return {k: v for k, v in fields.items() if k in names}

    def _query_all(self, object_type: str, where: str, order: str, max_pages: int | None = None) -> Iterator[CrmRecord]:
        soql = f"SELECT {', '.join(self._fields(object_type))} FROM {object_type} WHERE {where} {order}".strip()
        for page in self._query_pages(soql, max_pages):
            yield from (record_from_row(row) for row in page["records"])

    def _query_pages(self, soql: str, max_pages: int | None = None) -> Iterator[dict]:
        """GET query?q=..., then each nextRecordsUrl until done=true (or max_pages)."""
        path, params, pages = "query/", {"q": soql}, 0
        while True:
            def send(token: str, info: CallInfo, path=path, params=params):
                return self._rest(info, token, path, params=params)

            page = self._call("query", [], send)
            pages += 1
            yield page
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url or (max_pages and pages >= max_pages):
                return
            path, params = self._relative(next_url), None

    def _relative(self, next_url: str) -> str:
        prefix = f"/services/data/v{self.api_version}/"
        return next_url[len(prefix):] if next_url.startswith(prefix) else next_url.lstrip("/")

    def read_changes(self, cursor: str | None) -> ChangePage:
        """Leads and Contacts changed since the cursor, by SystemModstamp with an Id tie-breaker.

        Cursor: {"Lead": {"t": "<+0000 datetime>", "id": "<Id>"}, "Contact": {...}}. When caught
        up, the cursor is moved back to CHANGES_LOOKBACK_SECONDS before now (never behind where it
        was), so records committed late with an older SystemModstamp are still seen.
        """
        state = json.loads(cursor) if cursor else {}
        records: list[CrmRecord] = []
        has_more = False
        for object_type in self.person_objects:
            position = state.get(object_type) or {"t": EPOCH, "id": ""}
            page_records, position, more = self._changes_since(object_type, position)
            records.extend(page_records)
            state[object_type] = position
            has_more = has_more or more
        return ChangePage(records, json.dumps(state, sort_keys=True), has_more=has_more)

    def _changes_since(self, object_type: str, position: dict) -> tuple[list[CrmRecord], dict, bool]:
        records, last_page = [], None
        for page in self._query_pages(self._keyset_soql(object_type, position), max_pages=defaults.CHANGES_MAX_PAGES):
            records.extend(record_from_row(row) for row in page["records"])
            last_page = page
        more = bool(last_page and not last_page.get("done", True))
        if not records:
            return records, position, more
        last = records[-1]
        newest = {"t": last.properties["SystemModstamp"], "id": last.id}
        if more:
            return records, newest, True
        floor = (self.clock() - timedelta(seconds=defaults.CHANGES_LOOKBACK_SECONDS))
        if parse_sf_datetime(newest["t"]) <= floor:
            return records, newest, False
        previous = parse_sf_datetime(position["t"])
        back_to = max(previous, floor)
        if back_to == previous:
            return records, position, False
        return records, {"t": format_sf_datetime(back_to), "id": ""}, False

    def read_deleted(self, object_type: str, start: datetime, end: datetime) -> tuple[list[tuple[str, datetime]], datetime]:
        """sObject Get Deleted: (id, deletedDate) of the records deleted from `start` to `end` (Salesforce
        reads both to the minute), and latestDateCovered, where the next call starts."""
        params = {"start": _minute_param(start), "end": _minute_param(end)}

        def send(token: str, info: CallInfo):
            return self._rest(info, token, f"sobjects/{object_type}/deleted/", params=params)

        answer = self._call("sobjects.deleted", [object_type], send) or {}
        deleted = [(row["id"], parse_sf_datetime(row["deletedDate"])) for row in answer.get("deletedRecords") or []]
        covered = answer.get("latestDateCovered")
        return deleted, parse_sf_datetime(covered) if covered else start

    def iter_all(self, cursor: str | None = None) -> Iterator[ChangePage]:
        """Every Lead and Contact (backfill), ordered by (SystemModstamp, Id), following nextRecordsUrl.

        Each page's cursor is the keyset position after it, so an interrupted backfill resumes
        where it stopped; the last page's cursor is None.
        """
        state = json.loads(cursor) if cursor else {}
        for object_type in self.person_objects:
            if state.get(object_type, {}).get("done"):
                continue
            position = state.get(object_type) or {"t": EPOCH, "id": ""}
            for page in self._query_pages(self._keyset_soql(object_type, position)):
                records = [record_from_row(row) for row in page["records"]]
                if records:
                    state[object_type] = {"t": records[-1].properties["SystemModstamp"], "id": records[-1].id}
                    yield ChangePage(records, json.dumps(state, sort_keys=True))
            state[object_type] = {"done": True}
        yield ChangePage([], None)

    def _keyset_soql(self, object_type: str, position: dict) -> str:
        literal = soql_datetime(position["t"])
        where = f"SystemModstamp > {literal}"
        if position.get("id"):
            where += f" OR (SystemModstamp = {literal} AND Id > '{soql_escape(position['id'])}')"
        return (f"SELECT {', '.join(self._fields(object_type))} FROM {object_type} WHERE {where} "
                f"ORDER BY SystemModstamp, Id")

    # --- schema ----------------------------------------------------------------------------------

    def describe_fields(self, object_type: str) -> dict[str, dict]:
        def send(token: str, info: CallInfo):
            return self._rest(info, token, f"sobjects/{object_type}/describe")

        described = self._call("sobjects.describe", [object_type], send)
        return {f["name"]: {"type": f.get("type"), "label": f.get("label"), "length": f.get("length"),
                            "nillable": f.get("nillable"), "createable": f.get("createable"),
                            "updateable": f.get("updateable"),
                            "picklist": [p["value"] for p in f.get("picklistValues") or [] if p.get("active", True)]}
                for f in described.get("fields", [])}

    def ensure_hub_fields(self) -> list[str]:
        """Custom fields need the Metadata API (an admin creates them): report the ones missing."""
        missing = []
        for object_type in self.person_objects:
            fields = self.describe_fields(object_type)
            missing.extend(f"{object_type}.{name}" for name in HUB_FIELDS if name not in fields)
        return missing

    # --- tasks -----------------------------------------------------------------------------------

    def create_task(self, task: TaskSpec) -> str:
        """A Task on the Lead/Contact (WhoId); returns the Task id."""
        due = (task.due_at or self.clock()).astimezone(timezone.utc).date()
        body = {"WhoId": task.record_id, "Subject": task.subject[:255], "Description": task.body,
                "ActivityDate": due.isoformat(), "Status": "Not Started",
                "Priority": TASK_PRIORITY.get(task.priority, "High")}
        if task.owner_id:
            body["OwnerId"] = task.owner_id

        def send(token: str, info: CallInfo):
            return self._rest(info, token, "sobjects/Task", method="POST", data=json.dumps(body))

        created = self._call("task.create", [task.record_id], send)
        if not created.get("success", True):
            error = (created.get("errors") or [{}])[0]
            raise FatalError(str(error.get("message")), code=error.get("statusCode"))
        return created["id"]

    def read_tasks(self, ids: list[str]) -> dict[str, TaskState]:
        """Tasks by Id: one SOQL query per ≤200 ids (IsClosed says done, as the org's TaskStatus defines it)."""
        found: dict[str, TaskState] = {}
        for batch in chunks(list(dict.fromkeys(ids)), self.lookup_batch):
            soql = f"SELECT {', '.join(TASK_READ_FIELDS)} FROM Task WHERE Id IN ({soql_in(batch)})"
            for page in self._query_pages(soql):
                for row in page["records"]:
                    found[row["Id"]] = TaskState(id=row["Id"], status=row.get("Status"), done=bool(row.get("IsClosed")),
                                                 body=row.get("Description"))
        return found

    def defer_tasks(self, bodies: dict[str, str]) -> list[WriteResult]:
        """Status Deferred (and the new Description) through sObject Collections, ≤200 per call."""
        updates = [(task_id, "Task", task_id, {"Status": TASK_DEFERRED, "Description": text})
                   for task_id, text in bodies.items()]
        results: list[WriteResult] = []
        for batch in chunks(updates, self.batch_size):
            results.extend(self._collection_call("PATCH", batch))
        return results


    # --- owners ----------------------------------------------------------------------------------

    def list_owners(self) -> list[CrmUser]:
        """Every active User with an email (SOQL on User, following nextRecordsUrl, bounded)."""
        users = []
        for page in self._query_pages(USER_SOQL, max_pages=defaults.OWNER_DIRECTORY_MAX_PAGES):
            users.extend(CrmUser(row["Id"], row["Email"].strip().lower()) for row in page["records"]
                         if row.get("Id") and row.get("Email"))
        return users


# --- error classification (the client boundary) ----------------------------------------------------

def classify_error(status: int, content, headers) -> Exception:
    errors = content if isinstance(content, list) else []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    code = first.get("errorCode") or f"HTTP_{status}"
    message = first.get("message") or f"Salesforce answered {status}"
    if status == 401:
        return TokenExpiredError(message, code=code, status=401)
    if code == "REQUEST_LIMIT_EXCEEDED":
        return RetriableError(f"{code}: {message}", retry_after=defaults.SALESFORCE_RESERVE_RETRY_SECONDS,
                              status=status)
    if status in (423, 429) or status >= 500 or code in ("UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"):
        retry_after = None
        value = headers.get("Retry-After") if headers is not None else None
        if value and value.strip().isdigit():
            retry_after = float(value)
        return RetriableError(f"{code}: {message}", retry_after=retry_after, status=status)
    return FatalError(message, code=code, status=status)


# --- record shapes --------------------------------------------------------------------------------

def prepare_fields(object_type: str, fields: dict, creating: bool) -> dict:
    """What Salesforce accepts for this object: Contact-side names, no read-only fields, placeholders."""
    prepared: dict[str, Any] = {}
    for name, value in fields.items():
        if name in READ_ONLY or name == "attributes":
            continue
        if object_type == "Contact":
            if name in LEAD_ONLY:
                continue
            name = LEAD_TO_CONTACT.get(name, name)
        prepared[name] = _to_salesforce_value(value)
    for name in REQUIRED_PLACEHOLDERS.get(object_type, ()):
        if (creating or name in prepared) and not prepared.get(name):
            prepared[name] = defaults.PLACEHOLDER
    return prepared


def _to_salesforce_value(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, datetime):
        return format_sf_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return value


def save_result(key: str, object_type: str, record_id: str | None, row: dict) -> WriteResult:
    if row.get("success"):
        return WriteResult(key=key, id=row.get("id") or record_id, ok=True, created=record_id is None,
                           object_type=object_type)
    error = (row.get("errors") or [{}])[0]
    return WriteResult(key=key, id=row.get("id") or record_id, ok=False, error_code=error.get("statusCode"),
                       error_message=error.get("message"), object_type=object_type)


def record_from_row(row: dict) -> CrmRecord:
    object_type = (row.get("attributes") or {}).get("type") or "Lead"
    properties: dict[str, Any] = {}
    for name, value in row.items():
        if name == "attributes":
            continue
        if isinstance(value, dict):      # a relationship, e.g. Account.Name
            for sub, sub_value in value.items():
                if sub != "attributes":
                    properties[f"{name}.{sub}"] = sub_value
        else:
            properties[name] = value
    updated = row.get("LastModifiedDate")
    return CrmRecord(object_type=object_type, id=row.get("Id"), properties=properties,
                     updated_at=parse_sf_datetime(updated) if updated else None,
                     modified_by=row.get("LastModifiedById"))


def _email(record: CrmRecord) -> str:
    return (record.properties.get("Email") or "").lower()


def parse_sf_datetime(value: str) -> datetime:
    """'2026-11-25T18:04:11.000+0000' (REST) or '...Z' -> aware UTC datetime."""
    text = value.replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def format_sf_datetime(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _minute_param(value: datetime) -> str:
    """A Get Deleted `start`/`end` value: ISO 8601 with a +00:00 offset (Salesforce ignores the seconds)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:00+00:00")


def soql_datetime(value: str) -> str:
    """A SOQL datetime literal (second precision, Z) for a REST datetime."""
    return parse_sf_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def soql_in(values: list[str]) -> str:
    return ", ".join(f"'{soql_escape(v)}'" for v in values)
