"""HubSpot CRM client (contacts) on hubspot-api-client: batch upsert/read by email, changes, backfill,
properties, the hub's score fields and follow-up tasks.

Declarative part: object, id property, batch size, replication key and the properties read are
class attributes. Every call goes through `CrmConnector._call` (rate limit, bounded retries
honouring Retry-After, one token refresh on 401, sync_log) and has a timeout. Errors are classified
here: 429/423/5xx/timeouts -> RetriableError (429 policyName DAILY -> retry no sooner than the next
day), 401 -> TokenExpiredError, other 4xx -> FatalError(code=HubSpot's category).

Construct through the registry: `registry.connector_for(runtime, workspace_id, "hubspot")`.
Directly (tests): `HubSpotConnector(StaticTokens("tok"), api_base="http://127.0.0.1:8123")`.
The SDK speaks urllib3, so tests point `api_base` at a loopback server (hub/sandbox/hubspot_fake.py).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import urllib3
from hubspot import HubSpot
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
)
from hubspot.crm.objects.tasks import ApiException as TasksApiException
from hubspot.crm.owners import ApiException as OwnersApiException
from hubspot.crm.objects.tasks import AssociationSpec, PublicAssociationsForObject, PublicObjectId
from hubspot.crm.objects.tasks import BatchInputSimplePublicObjectBatchInput as TaskBatchUpdate
from hubspot.crm.objects.tasks import BatchReadInputSimplePublicObjectId as TaskBatchRead
from hubspot.crm.objects.tasks import SimplePublicObjectBatchInput as TaskUpdate
from hubspot.crm.objects.tasks import SimplePublicObjectId as TaskId
from hubspot.crm.objects.tasks import SimplePublicObjectInputForCreate as TaskInput
from hubspot.crm.properties import ApiException as PropertiesApiException
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
from marshmallow import INCLUDE, Schema, fields

from hub import defaults
from hub.connectors.base import (
    CallInfo,
    ChangePage,
    CrmConnector,
    CrmRecord,
    CrmUser,
    Limiter,
    TaskSpec,
    TaskState,
    WriteResult,
    chunks,
)
from hub.exceptions import FatalError, RetriableError, TokenExpiredError

logger = logging.getLogger(__name__)

API_EXCEPTIONS = (ContactsApiException, TasksApiException, PropertiesApiException, OwnersApiException)

# Properties the default field map syncs (DESIGN.md "Sync semantics").
SYNCED_PROPERTIES = (
    "email", "firstname", "lastname", "phone", "mobilephone", "company", "jobtitle", "country", "state", "city",
    "website", "numemployees", "industry", "lifecyclestage", "hubspot_owner_id",
    "hub_score", "hub_grade", "hub_score_reasons",
)
META_PROPERTIES = ("lastmodifieddate", "createdate", "hs_object_id")

HUB_GROUP = {"name": "lead_hub", "label": "Lead hub", "display_order": -1}
HUB_PROPERTIES = (
    {"name": "hub_score", "label": "Hub score", "type": "number", "field_type": "number",
     "description": "Lead score computed by the lead hub"},
    {"name": "hub_grade", "label": "Hub grade", "type": "string", "field_type": "text",
     "description": "Lead grade (A-D) computed by the lead hub"},
    {"name": "hub_score_reasons", "label": "Hub score reasons", "type": "string", "field_type": "textarea",
     "description": "Rules that made the lead hub score"},
)
TASK_TO_CONTACT_ASSOCIATION = 204       # HubSpot-defined association type: task -> contact
TASK_PRIORITIES = {"HIGH", "MEDIUM", "LOW"}
# hs_task_status options: NOT_STARTED, IN_PROGRESS, WAITING, COMPLETED, DEFERRED
TASK_DONE = "COMPLETED"
TASK_DEFERRED = "DEFERRED"
TASK_READ_PROPERTIES = ("hs_task_status", "hs_task_body")


class HubSpotCredentials(Schema):
    """Connection.credentials of a HubSpot connection (secret fields are never logged)."""

    class Meta:
        unknown = INCLUDE

    access_token = fields.String(required=True, metadata={"secret": True})
    refresh_token = fields.String(load_default=None, metadata={"secret": True})
    expires_at = fields.Float(load_default=None, allow_none=True)
    client_id = fields.String(load_default=None)
    client_secret = fields.String(load_default=None, metadata={"secret": True})
    app_secret = fields.String(load_default=None, metadata={"secret": True})


class HubSpotConnector(CrmConnector):
    kind = "hubspot"
    object_type = "contact"
    id_property = "email"
    batch_size = defaults.HUBSPOT_BATCH_SIZE
    replication_key = "lastmodifieddate"
    read_properties = SYNCED_PROPERTIES + META_PROPERTIES
    history_properties = SYNCED_PROPERTIES
    backfill_page_size = 50              # HubSpot's cap when propertiesWithHistory is asked for
    credentials_schema = HubSpotCredentials

    def __init__(self, tokens, *, api_base: str = defaults.DEFAULT_HUBSPOT_API_BASE,
                 search_limiter: Limiter | None = None, clock: Callable[[], float] | None = None, **kwargs):
        super().__init__(tokens, **kwargs)
        self.api_base = api_base.rstrip("/")
        self.search_limiter = search_limiter
        self.clock = clock or (lambda: datetime.now(timezone.utc).timestamp())
        self._clients: dict[str, HubSpot] = {}

    # --- SDK plumbing ----------------------------------------------------------------------------

    def _client(self, token: str) -> HubSpot:
        """One SDK client per access token (the SDK builds a pool per API object: keep them)."""
        client = self._clients.get(token)
        if client is None:
            self._clients.clear()
            client = HubSpot(access_token=token, host=self.api_base, retry=urllib3.Retry(total=0, redirect=0))
            client = _CachedApis(client)
            self._clients[token] = client
        return client

    def _sdk_call(self, info: CallInfo, method: Callable, *args, **kwargs):
        """Call an SDK `*_with_http_info` method; classify whatever goes wrong."""
        try:
            data, status, headers = method(*args, _request_timeout=self.timeout, **kwargs)
        except API_EXCEPTIONS as exc:
            info.http_status = exc.status
            info.request_id = _header(exc.headers, "X-HubSpot-Correlation-Id") or _body_field(exc.body, "correlationId")
            raise classify_error(exc.status, exc.headers, exc.body, self.clock()) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetriableError(f"HubSpot unreachable: {type(exc).__name__}") from exc
        info.http_status = status
        info.request_id = _header(headers, "X-HubSpot-Correlation-Id")
        return data

    # --- writes ----------------------------------------------------------------------------------

    def batch_upsert(self, records: list[CrmRecord]) -> list[WriteResult]:
        """Upsert contacts by email, ≤100 per call; one bad record fails alone."""
        inputs, results = self._upsert_inputs(records)
        for batch in chunks(list(inputs.items()), self.batch_size):
            results.extend(self._upsert_batch(dict(batch)))
        return results

    def _upsert_inputs(self, records: list[CrmRecord]) -> tuple[dict[str, dict], list[WriteResult]]:
        """email -> properties (later records for the same email win); records without email fail."""
        inputs: dict[str, dict] = {}
        failed: list[WriteResult] = []
        for record in records:
            email = (record.properties.get("email") or "").strip().lower()
            if not email:
                failed.append(WriteResult(key=record.id or "", id=record.id, ok=False, error_code="MISSING_EMAIL",
                                          error_message="HubSpot upsert needs an email", object_type="contact"))
                continue
            # the email is the upsert id; it is not sent again as a property
            inputs.setdefault(email, {}).update({k: to_hubspot_value(v) for k, v in record.properties.items()
                                                 if k != self.id_property})
        return inputs, failed

    def _upsert_batch(self, inputs: dict[str, dict]) -> list[WriteResult]:
        # SDK request models: client-side validation runs before anything is sent
        body = BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
            SimplePublicObjectBatchInputUpsert(id_property=self.id_property, id=email, properties=props)
            for email, props in inputs.items()])

        def send(token: str, info: CallInfo):
            api = self._client(token).contacts_batch
            response = self._sdk_call(info, api.upsert_with_http_info, body)
            if getattr(response, "errors", None):
                info.status = "partial"
            info.object_ids = [row.id for row in response.results or []]
            return response

        try:
            response = self._call("contacts.batch_upsert", [], send)
        except FatalError as exc:
            if isinstance(exc, TokenExpiredError) or len(inputs) == 1:
                if len(inputs) == 1:
                    email = next(iter(inputs))
                    return [WriteResult(key=email, id=None, ok=False, error_code=exc.code,
                                        error_message=str(exc), object_type="contact")]
                raise
            return self._bisect(inputs)
        return self._upsert_results(inputs, response)

    def _bisect(self, inputs: dict[str, dict]) -> list[WriteResult]:
        """HubSpot refused the whole batch (400): split it so the bad record fails alone."""
        items = list(inputs.items())
        middle = len(items) // 2
        return self._upsert_batch(dict(items[:middle])) + self._upsert_batch(dict(items[middle:]))

    def _upsert_results(self, inputs: dict[str, dict], response) -> list[WriteResult]:
        results: dict[str, WriteResult] = {}
        for row in response.results or []:
            email = ((row.properties or {}).get("email") or "").lower()
            key = email if email in inputs else _match_id(row, inputs)
            results[key] = WriteResult(key=key, id=row.id, ok=True, created=bool(getattr(row, "new", False)),
                                       object_type="contact")
        for error in getattr(response, "errors", None) or []:
            for key in _context_ids(error):
                key = key.lower()
                results[key] = WriteResult(key=key, id=None, ok=False, error_code=error.category,
                                           error_message=error.message, object_type="contact")
        return [results.get(email) or WriteResult(key=email, id=None, ok=False, error_code="NO_RESULT",
                                                  error_message="HubSpot returned no result for this input",
                                                  object_type="contact")
                for email in inputs]

    def batch_update(self, records: list[CrmRecord]) -> list[WriteResult]:
        """Update contacts by HubSpot id, ≤100 per call (an email change: an upsert by the new email
        would create a second contact). Results are keyed by the record id; one bad record fails alone."""
        inputs = {str(r.id): {k: to_hubspot_value(v) for k, v in r.properties.items()} for r in records if r.id}
        results = [WriteResult(key="", id=None, ok=False, error_code="MISSING_ID",
                               error_message="an update by id needs the record id", object_type="contact")
                   for r in records if not r.id]
        for batch in chunks(list(inputs.items()), self.batch_size):
            results.extend(self._update_batch(dict(batch)))
        return results

    def _update_batch(self, inputs: dict[str, dict]) -> list[WriteResult]:
        body = BatchInputSimplePublicObjectBatchInput(inputs=[
            SimplePublicObjectBatchInput(id=record_id, properties=props) for record_id, props in inputs.items()])

        def send(token: str, info: CallInfo):
            api = self._client(token).contacts_batch
            response = self._sdk_call(info, api.update_with_http_info, body)
            if getattr(response, "errors", None):
                info.status = "partial"
            return response

        try:
            response = self._call("contacts.batch_update", list(inputs), send)
        except TokenExpiredError:
            raise
        except FatalError as exc:
            if len(inputs) > 1:      # the whole batch was refused (400): split it so the bad record fails alone
                items = list(inputs.items())
                middle = len(items) // 2
                return self._update_batch(dict(items[:middle])) + self._update_batch(dict(items[middle:]))
            record_id = next(iter(inputs))
            return [WriteResult(key=record_id, id=record_id, ok=False, error_code=exc.code, error_message=str(exc),
                                object_type="contact")]
        found = {str(row.id): WriteResult(key=str(row.id), id=str(row.id), ok=True, object_type="contact")
                 for row in response.results or []}
        for error in getattr(response, "errors", None) or []:
            for record_id in _context_ids(error):
                found[record_id] = WriteResult(key=record_id, id=record_id, ok=False, error_code=error.category,
                                               error_message=error.message, object_type="contact")
        return [found.get(record_id) or WriteResult(key=record_id, id=record_id, ok=False, error_code="NO_RESULT",
                                                    error_message="HubSpot returned no result for this input",
                                                    object_type="contact")
                for record_id in inputs]

    def batch_delete(self, object_type: str, ids: list[str]) -> list[WriteResult]:
        """Archive contacts by id, ≤100 per call. HubSpot answers 204 whatever each id's state (archived
        already, never existed), so every id of an accepted call is reported deleted."""
        results: list[WriteResult] = []
        for batch in chunks([str(i) for i in dict.fromkeys(ids)], self.batch_size):
            body = BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=i) for i in batch])

            def send(token: str, info: CallInfo, body=body):
                api = self._client(token).contacts_batch
                return self._sdk_call(info, api.archive_with_http_info, body)

            self._call("contacts.batch_archive", batch, send)
            results.extend(WriteResult(key=i, id=i, ok=True, object_type="contact") for i in batch)
        return results

    # --- reads ----------------------------------------------------------------------------------

    def find_by_email(self, emails: list[str]) -> dict[str, CrmRecord]:
        """Batch read by idProperty=email (≤100 per call), never one search per contact."""
        wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
        found: dict[str, CrmRecord] = {}
        for batch in chunks(wanted, self.batch_size):
            for record in self._batch_read(batch, id_property=self.id_property, history=False):
                found[(record.properties.get("email") or "").lower()] = record
        return found

    def read_by_ids(self, object_type: str, ids: list[str]) -> dict[str, CrmRecord]:
        """Contacts by HubSpot id, with per-property change times (propertiesWithHistory)."""
        found: dict[str, CrmRecord] = {}
        for batch in chunks([str(i) for i in dict.fromkeys(ids)], self.batch_size):
            for record in self._batch_read(batch, id_property=None, history=True):
                found[record.id] = record
        return found

    def _batch_read(self, ids: list[str], id_property: str | None, history: bool) -> list[CrmRecord]:
        # propertiesWithHistory is a required field of the request model (empty when not wanted)
        body = BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=i) for i in ids], properties=list(self.read_properties),
            properties_with_history=list(self.history_properties) if history else [], id_property=id_property)

        def send(token: str, info: CallInfo):
            api = self._client(token).contacts_batch
            # 207: ids that do not exist come back as OBJECT_NOT_FOUND errors; they are simply absent
            return self._sdk_call(info, api.read_with_http_info, body)

        response = self._call("contacts.batch_read", ids if not id_property else [], send)
        return [record_from_sdk(row) for row in response.results or []]

    def read_changes(self, cursor: str | None) -> ChangePage:
        """Contacts modified since the cursor (search by lastmodifieddate, ascending, paging `after`).

        Cursor: {"since": epoch ms, "after": search offset or null}. Each page is re-read with
        propertiesWithHistory so every record carries per-property change times. When caught up
        the cursor restarts CHANGES_LOOKBACK_SECONDS behind the newest change (search index lag).
        """
        state = json.loads(cursor) if cursor else {"since": 0, "after": None}
        page = self._search_since(int(state["since"]), state.get("after"))
        ids = [row.id for row in page.results or []]
        detailed = self.read_by_ids(self.object_type, ids) if ids else {}
        records = [detailed.get(i) or record_from_sdk(row) for i, row in zip(ids, page.results or [])]
        next_after = page.paging.next.after if page.paging and page.paging.next else None
        newest = max((_ms(r.updated_at) for r in records if r.updated_at), default=int(state["since"]))
        if next_after and int(next_after) < defaults.HUBSPOT_SEARCH_MAX_RESULTS - defaults.HUBSPOT_SEARCH_PAGE_SIZE:
            return ChangePage(records, json.dumps({"since": int(state["since"]), "after": next_after}), has_more=True)
        if next_after:   # search pages no further: restart from the newest time seen (GTE, ids re-read)
            return ChangePage(records, json.dumps({"since": newest, "after": None}), has_more=True)
        lookback_floor = int(self.clock() * 1000) - defaults.CHANGES_LOOKBACK_SECONDS * 1000
        return ChangePage(records, json.dumps({"since": max(int(state["since"]), min(newest, lookback_floor)),
                                               "after": None}))

    def _search_since(self, since_ms: int, after: str | None):
        # sorts as HubSpot's search docs write them ({propertyName, direction}); the SDK types them loosely
        body = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=[Filter(property_name=self.replication_key, operator="GTE",
                                                       value=str(since_ms))])],
            sorts=[{"propertyName": self.replication_key, "direction": "ASCENDING"}],
            properties=list(self.read_properties), limit=defaults.HUBSPOT_SEARCH_PAGE_SIZE,
            after=str(after) if after else None)

        def send(token: str, info: CallInfo):
            api = self._client(token).contacts_search
            return self._sdk_call(info, api.do_search_with_http_info, body)

        return self._call("contacts.search", [], send, limiter=self.search_limiter)

    def iter_all(self, cursor: str | None = None) -> Iterator[ChangePage]:
        """Every contact (backfill), paging with the list API's `after` cursor."""
        after = cursor
        while True:
            page = self._list_page(after)
            records = [record_from_sdk(row) for row in page.results or []]
            after = page.paging.next.after if page.paging and page.paging.next else None
            yield ChangePage(records, after)
            if not after:
                return

    def _list_page(self, after: str | None):
        kwargs: dict[str, Any] = {"limit": self.backfill_page_size, "properties": list(self.read_properties),
                                  "properties_with_history": list(self.history_properties)}
        if after:
            kwargs["after"] = after

        def send(token: str, info: CallInfo):
            api = self._client(token).contacts_basic
            return self._sdk_call(info, api.get_page_with_http_info, **kwargs)

        return self._call("contacts.list", [], send)

    # --- schema ----------------------------------------------------------------------------------

    def describe_fields(self, object_type: str = "contacts") -> dict[str, dict]:
        def send(token: str, info: CallInfo):
            api = self._client(token).properties_core
            return self._sdk_call(info, api.get_all_with_http_info, _object_type(object_type))

        response = self._call("properties.list", [], send)
        return {prop.name: {"type": prop.type, "field_type": prop.field_type, "label": prop.label,
                            "group": prop.group_name,
                            "options": [option.value for option in prop.options or []],
                            "read_only": bool(prop.modification_metadata and
                                              prop.modification_metadata.read_only_value)}
                for prop in response.results or []}

    def ensure_hub_fields(self) -> list[str]:
        """Create the 'Lead hub' property group and hub_score/hub_grade/hub_score_reasons if missing."""
        existing = self.describe_fields("contacts")
        missing = [spec for spec in HUB_PROPERTIES if spec["name"] not in existing]
        if not missing:
            return []
        self._create_group()
        for spec in missing:
            self._create_property(spec)
        existing = self.describe_fields("contacts")
        return [spec["name"] for spec in HUB_PROPERTIES if spec["name"] not in existing]

    def _create_group(self) -> None:
        def send(token: str, info: CallInfo):
            api = self._client(token).properties_groups
            return self._sdk_call(info, api.create_with_http_info, "contacts", PropertyGroupCreate(**HUB_GROUP))

        try:
            self._call("properties.create_group", [HUB_GROUP["name"]], send)
        except FatalError as exc:
            if exc.status != 409:   # 409: the group exists already
                raise

    def _create_property(self, spec: dict) -> None:
        model = PropertyCreate(group_name=HUB_GROUP["name"], **spec)

        def send(token: str, info: CallInfo):
            api = self._client(token).properties_core
            return self._sdk_call(info, api.create_with_http_info, "contacts", model)

        try:
            self._call("properties.create", [spec["name"]], send)
        except FatalError as exc:
            if exc.status != 409:
                raise

    # --- tasks -----------------------------------------------------------------------------------

    def create_task(self, task: TaskSpec) -> str:
        """A task associated with the contact; returns the task id."""
        due = task.due_at or datetime.now(timezone.utc)
        properties = {"hs_task_subject": task.subject, "hs_task_body": task.body,
                      "hs_timestamp": due.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
                      "hs_task_status": "NOT_STARTED",
                      "hs_task_priority": task.priority if task.priority in TASK_PRIORITIES else "HIGH",
                      "hs_task_type": "TODO"}
        if task.owner_id:
            properties["hubspot_owner_id"] = str(task.owner_id)
        body = TaskInput(properties=properties, associations=[PublicAssociationsForObject(
            to=PublicObjectId(id=str(task.record_id)),
            types=[AssociationSpec(association_category="HUBSPOT_DEFINED",
                                   association_type_id=TASK_TO_CONTACT_ASSOCIATION)])])

        def send(token: str, info: CallInfo):
            api = self._client(token).tasks_basic
            return self._sdk_call(info, api.create_with_http_info, body)

        created = self._call("tasks.create", [str(task.record_id)], send)
        return created.id

    def read_tasks(self, ids: list[str]) -> dict[str, TaskState]:
        """Tasks by id through the batch read (≤100 per call); a deleted task is simply absent."""
        found: dict[str, TaskState] = {}
        for batch in chunks([str(i) for i in dict.fromkeys(ids)], self.batch_size):
            body = TaskBatchRead(inputs=[TaskId(id=i) for i in batch], properties=list(TASK_READ_PROPERTIES),
                                 properties_with_history=[])

            def send(token: str, info: CallInfo, body=body):
                # 207: ids that do not exist come back as OBJECT_NOT_FOUND errors
                return self._sdk_call(info, self._client(token).tasks_batch.read_with_http_info, body)

            response = self._call("tasks.batch_read", batch, send)
            for row in response.results or []:
                properties = row.properties or {}
                status = properties.get("hs_task_status")
                found[str(row.id)] = TaskState(id=str(row.id), status=status, done=status == TASK_DONE,
                                               body=properties.get("hs_task_body"))
        return found

    def defer_tasks(self, bodies: dict[str, str]) -> list[WriteResult]:
        """hs_task_status DEFERRED (and the new body) through the batch update, ≤100 per call."""
        results: list[WriteResult] = []
        for batch in chunks(list(bodies.items()), self.batch_size):
            body = TaskBatchUpdate(inputs=[
                TaskUpdate(id=str(task_id), properties={"hs_task_status": TASK_DEFERRED, "hs_task_body": text})
                for task_id, text in batch])

            def send(token: str, info: CallInfo, body=body):
                response = self._sdk_call(info, self._client(token).tasks_batch.update_with_http_info, body)
                if getattr(response, "errors", None):
                    info.status = "partial"
                return response

            response = self._call("tasks.batch_update", [str(task_id) for task_id, _ in batch], send)
            results.extend(_task_results([str(task_id) for task_id, _ in batch], response))
        return results


    # --- owners ----------------------------------------------------------------------------------

    def list_owners(self) -> list[CrmUser]:
        """Every active owner with an email (GET /crm/v3/owners, paging `after`, bounded)."""
        users: list[CrmUser] = []
        after = None
        for _ in range(defaults.OWNER_DIRECTORY_MAX_PAGES):
            page = self._owners_page(after)
            users.extend(CrmUser(str(row.id), row.email.strip().lower()) for row in page.results or []
                         if row.id and row.email and not row.archived)
            after = page.paging.next.after if page.paging and page.paging.next else None
            if not after:
                return users
        logger.warning("HubSpot owners: stopped after %s pages", defaults.OWNER_DIRECTORY_MAX_PAGES)
        return users

    def _owners_page(self, after: str | None):
        kwargs: dict[str, Any] = {"limit": defaults.HUBSPOT_OWNERS_PAGE_SIZE}      # archived owners are left out by default
        if after:
            kwargs["after"] = after

        def send(token: str, info: CallInfo):
            api = self._client(token).owners
            return self._sdk_call(info, api.get_page_with_http_info, **kwargs)

        return self._call("owners.list", [], send)


class _CachedApis:
    """The SDK APIs this connector uses, built once per client."""

    def __init__(self, client: HubSpot):
        self.contacts_batch = client.crm.contacts.batch_api
        self.contacts_basic = client.crm.contacts.basic_api
        self.contacts_search = client.crm.contacts.search_api
        self.properties_core = client.crm.properties.core_api
        self.properties_groups = client.crm.properties.groups_api
        self.tasks_basic = client.crm.objects.tasks.basic_api
        self.tasks_batch = client.crm.objects.tasks.batch_api
        self.owners = client.crm.owners.owners_api


# --- error classification (the client boundary) ----------------------------------------------------

def classify_error(status: int, headers, body, now: float) -> Exception:
    """HubSpot answer -> RetriableError | TokenExpiredError | FatalError."""
    payload = _json(body)
    if status == 401:
        return TokenExpiredError("HubSpot refused the access token", code=payload.get("category") or "UNAUTHORIZED",
                                 status=401)
    if status in (423, 429) or status >= 500 or status == 0:
        return RetriableError(f"HubSpot answered {status} {payload.get('policyName') or ''}".strip(),
                              retry_after=_retry_after(status, headers, payload, now), status=status)
    code = payload.get("category") or payload.get("errorType") or f"HTTP_{status}"
    return FatalError(f"HubSpot refused the request: {payload.get('message') or status}", code=code, status=status)


def _retry_after(status: int, headers, payload: dict, now: float) -> float | None:
    if payload.get("policyName") == "DAILY":
        tomorrow = (datetime.fromtimestamp(now, timezone.utc) + timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0)
        return max(tomorrow.timestamp() - now, float(defaults.HUBSPOT_DAILY_RETRY_SECONDS))
    header = _header(headers, "Retry-After")
    if header:
        try:
            return max(float(header), 0.0)
        except ValueError:
            return None
    interval = _header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
    if status == 429 and interval and interval.isdigit():
        return int(interval) / 1000.0
    return None


def _header(headers, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in dict(headers).items() if k.lower() == lowered), None)
    return value


def _json(body) -> dict:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _body_field(body, name: str) -> str | None:
    return _json(body).get(name)


# --- record shapes --------------------------------------------------------------------------------

def to_hubspot_value(value: Any) -> str:
    """HubSpot property values are strings; None clears the property."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return str(int(value.timestamp() * 1000))
    return str(value)


def record_from_sdk(row) -> CrmRecord:
    """An SDK SimplePublicObject (with or without propertiesWithHistory) -> CrmRecord."""
    properties = dict(row.properties or {})
    field_times: dict[str, datetime] = {}
    sources: dict[str, str] = {}
    for name, history in (getattr(row, "properties_with_history", None) or {}).items():
        if not history:
            continue
        latest = max(history, key=lambda entry: _as_datetime(entry.timestamp))
        field_times[name] = _as_datetime(latest.timestamp)
        sources[name] = f"{latest.source_type}:{latest.source_id or ''}"
        properties.setdefault(name, latest.value)
    updated_at = _as_datetime(row.updated_at) if row.updated_at else None
    return CrmRecord(object_type="contact", id=str(row.id), properties=properties, updated_at=updated_at,
                     field_times=field_times, field_sources=sources)


def _as_datetime(value) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _context_ids(error) -> list[str]:
    context = getattr(error, "context", None) or {}
    return [str(i) for i in context.get("ids", [])]


def _task_results(ids: list[str], response) -> list[WriteResult]:
    """One WriteResult per task id sent, in order: updated, or the error HubSpot named it in."""
    updated = {str(row.id) for row in response.results or []}
    errors: dict[str, WriteResult] = {}
    for error in getattr(response, "errors", None) or []:
        for task_id in _context_ids(error):
            errors[task_id] = WriteResult(key=task_id, id=task_id, ok=False, error_code=error.category,
                                          error_message=error.message, object_type="task")
    return [WriteResult(key=i, id=i, ok=True, object_type="task") if i in updated else
            errors.get(i) or WriteResult(key=i, id=i, ok=False, error_code="NO_RESULT",
                                         error_message="HubSpot returned no result for this task", object_type="task")
            for i in ids]


def _match_id(row, inputs: dict[str, dict]) -> str:
    return next((email for email in inputs if (row.properties or {}).get("email", "").lower() == email), str(row.id))


def _object_type(object_type: str) -> str:
    return "contacts" if object_type in ("contact", "contacts") else object_type
