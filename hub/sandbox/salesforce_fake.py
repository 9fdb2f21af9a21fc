"""A loopback Salesforce org: Leads, Contacts, Tasks and OAuth, in the REST API's documented formats.

Endpoints (exactly the ones hub/connectors/salesforce.py and hub/sync/tokens.py use), API v60.0:
  POST  /services/oauth2/token                          grant_type=refresh_token; no expires_in, no new refresh_token
  POST  /services/data/v60.0/composite/sobjects         create, ≤200, allOrNone; SaveResult list in request order
  PATCH /services/data/v60.0/composite/sobjects         update by id
  DELETE /services/data/v60.0/composite/sobjects?ids=   delete ≤200 by id (to the Recycle Bin); DeleteResults in order
  GET   /services/data/v60.0/query?q=SOQL               pages of `page_size` with nextRecordsUrl until done=true
  GET   /services/data/v60.0/query/<locator>            the next page
  GET   /services/data/v60.0/sobjects/<Object>/describe field lengths and picklists
  GET   /services/data/v60.0/sobjects/<Object>/deleted/?start=&end=   Get Deleted (to the minute; latestDateCovered)
  POST  /services/data/v60.0/sobjects/Task              a Task with WhoId
  (Tasks are read by SOQL, IsClosed derived from Status as the default TaskStatus values define it,
  and updated through the sObject Collections PATCH above)
Users (SELECT ... FROM User) are queried like any object; OwnerId must name a User ("005") or a
queue ("00G"), and an inactive User cannot own a record (INACTIVE_OWNER_OR_USER).
Every API answer carries `Sforce-Limit-Info: api-usage=N/M`; once N reaches M the org answers
403 REQUEST_LIMIT_EXCEEDED. Datetimes use `+0000`.

Test controls: `faults` (seeded 503s with Retry-After, or exact `fail_next`), token expiry
(`expire_token_after(calls=N)` / at a fake-clock time -> 401 INVALID_SESSION_ID), `requests` (every
request captured), `ui_edit` (a person's edit: LastModifiedById is that user, API writes carry the
integration user), `add_user` (the org starts with the integration user and one person), `ui_delete`, `convert_lead`, `block_duplicates` (a duplicate rule that blocks creates with
DUPLICATES_DETECTED), and `take_outbound_messages()`: the Outbound Message SOAP bodies the org would
send for the changes so far (≤100 notifications each, current values, one object type per message).
"""
from __future__ import annotations

import itertools
import json
import threading
from datetime import datetime, timezone
from xml.sax.saxutils import escape

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from hub.sandbox import soql
from hub.sandbox.common import CapturedRequest, FakeClock, FaultPlan

API = "/services/data/v60.0"
ORG_ID = "00D5g000004ABCDEA2"
ACTION_ID = "04k5g000000XyZaAAK"
INTEGRATION_USER = "0055g00000INTEGAAA"
HUMAN_USER = "0055g00000ABCdEAAX"
INTEGRATION_USER_EMAIL = "integration.user@fake-org.example.com"
HUMAN_USER_EMAIL = "alex.admin@fake-org.example.com"
CLIENT_ID = "fake-sf-client-id"
CLIENT_SECRET = "fake-sf-client-secret"
REFRESH_TOKEN = "5Aep861FakeRefreshTokenValueForTestsOnly"
PREFIXES = {"Lead": "00Q", "Contact": "003", "Account": "001", "Task": "00T", "User": "005"}
OWNER_PREFIXES = ("005", "00G")             # a User or a queue
SYSTEM_FIELDS = {"Id", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp",
                 "IsConverted", "ConvertedContactId", "ConvertedAccountId"}


def _field(name, type_="string", length=0, nillable=True, createable=True, updateable=True, picklist=None,
           reference_to=None) -> dict:
    field = {"name": name, "label": name, "type": type_, "length": length,
             "byteLength": length * 3, "nillable": nillable, "createable": createable, "updateable": updateable}
    if picklist is not None:
        field["picklistValues"] = [{"active": True, "defaultValue": i == 0, "label": v, "validFor": None, "value": v}
                                   for i, v in enumerate(picklist)]
        field["restrictedPicklist"] = True
    if reference_to:
        field["referenceTo"] = reference_to
    return field


# Task.Status standard picklist; of these only Completed is a closed TaskStatus (TaskStatus.IsClosed)
TASK_STATUSES = ["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"]
CLOSED_TASK_STATUSES = frozenset({"Completed"})
LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
_PERSON = [
    _field("Id", "id", 18, False, False, False), _field("FirstName", length=40), _field("LastName", length=80, nillable=False),
    _field("Email", "email", 80), _field("Phone", "phone", 40), _field("MobilePhone", "phone", 40),
    _field("Title", length=128), _field("OwnerId", "reference", 18, False, reference_to=["User"]),
    _field("CreatedDate", "datetime", 0, False, False, False), _field("CreatedById", "reference", 18, False, False, False),
    _field("LastModifiedDate", "datetime", 0, False, False, False),
    _field("LastModifiedById", "reference", 18, False, False, False),
    _field("SystemModstamp", "datetime", 0, False, False, False),
    _field("Hub_Score__c", "double", 0), _field("Hub_Grade__c", length=2), _field("Hub_Score_Reasons__c", "textarea", 1000),
]
DESCRIBE_FIELDS = {
    "Lead": _PERSON + [
        _field("Company", length=255, nillable=False), _field("Country", length=80), _field("State", length=80),
        _field("City", length=40), _field("Website", "url", 255), _field("NumberOfEmployees", "int"),
        _field("Industry", "picklist", 255, picklist=None), _field("LeadSource", "picklist", 255, picklist=None),
        _field("Rating", "picklist", 255, picklist=None),
        _field("Status", "picklist", 255, False, picklist=LEAD_STATUSES),
        _field("IsConverted", "boolean", 0, False, False, False),
        _field("ConvertedContactId", "reference", 18, True, False, False, reference_to=["Contact"]),
        _field("ConvertedAccountId", "reference", 18, True, False, False, reference_to=["Account"]),
    ],
    "Contact": _PERSON + [
        _field("MailingCountry", length=80), _field("MailingState", length=80), _field("MailingCity", length=40),
        _field("AccountId", "reference", 18, reference_to=["Account"]),
    ],
    "Task": [
        _field("Id", "id", 18, False, False, False), _field("WhoId", "reference", 18, reference_to=["Contact", "Lead"]),
        _field("Subject", "combobox", 255), _field("Description", "textarea", 32000), _field("ActivityDate", "date"),
        _field("Status", "picklist", 255, False, picklist=TASK_STATUSES),
        _field("IsClosed", "boolean", 0, False, False, False),
        _field("Priority", "picklist", 255, False, picklist=["High", "Normal", "Low"]),
        _field("OwnerId", "reference", 18, False, reference_to=["User"]),
    ],
    "User": [
        _field("Id", "id", 18, False, False, False), _field("Username", length=80, nillable=False),
        _field("Email", "email", 128, False), _field("FirstName", length=40), _field("LastName", length=80, nillable=False),
        _field("IsActive", "boolean", 0, False),
    ],
}
for _object_fields in DESCRIBE_FIELDS.values():
    for _f in _object_fields:
        if _f["type"] == "picklist" and "picklistValues" not in _f:
            _f["picklistValues"] = []
REQUIRED_ON_CREATE = {"Lead": ("LastName", "Company"), "Contact": ("LastName",), "Task": (), "User": ()}
OUTBOUND_FIELDS = {
    "Lead": ("Id", "Company", "ConvertedContactId", "Email", "FirstName", "IsConverted", "LastModifiedById",
             "LastModifiedDate", "LastName", "MobilePhone", "OwnerId", "Phone", "Status", "Title", "Country", "State",
             "City", "Website", "Hub_Score__c", "Hub_Grade__c"),
    "Contact": ("Id", "AccountId", "Email", "FirstName", "LastModifiedById", "LastModifiedDate", "LastName",
                "MobilePhone", "OwnerId", "Phone", "Title", "MailingCountry", "MailingState", "MailingCity"),
}


def sf_datetime(seconds: float) -> str:
    """REST datetime: second precision (ms always .000), +0000 offset."""
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def soap_datetime(rest_value: str) -> str:
    return rest_value.replace("+0000", "Z")


class SalesforceFake:
    """The WSGI app; `with serve(SalesforceFake()) as server:` runs it (hub/sandbox/server.py)."""

    def __init__(self, *, access_token: str = "00D5g000004ABCD!initial-access-token", clock: FakeClock | None = None,
                 faults: FaultPlan | None = None, page_size: int = 2000, api_limit: int = 100000,
                 api_used: int = 0, block_duplicates: bool = False, integration_user: str = INTEGRATION_USER,
                 hub_fields: bool = True):
        """`hub_fields`: the org has the hub's custom fields (Hub_Score__c, ...) on Lead and Contact."""
        self.describe_fields = {name: [f for f in fields if hub_fields or not f["name"].startswith("Hub_")]
                                for name, fields in DESCRIBE_FIELDS.items()}
        self.clock = clock or FakeClock()
        self.faults = faults or FaultPlan(statuses=(503,))
        self.page_size = page_size
        self.api_limit = api_limit
        self.api_used = api_used
        self.block_duplicates = block_duplicates
        self.integration_user = integration_user
        self.issued_token_calls: int | None = None     # calls a freshly issued token allows (None: unlimited)
        self.before_dispatch = None                    # callable(request): a test's hook, e.g. a concurrent edit
        self.base_url = ""
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, dict]] = {name: {} for name in PREFIXES}
        self.requests: list[CapturedRequest] = []
        self.token_requests = 0
        self.tokens: dict[str, dict] = {access_token: {"expires_at": None, "calls_left": None}}
        self.locators: dict[str, list[dict]] = {}
        self.outbound: dict[str, list[str]] = {"Lead": [], "Contact": []}   # ids changed, per object
        self.recycle_bin: dict[str, tuple[str, dict]] = {}            # deleted id -> (object, record)
        self.deleted_log: list[tuple[str, str, float]] = []           # (object, id, deleted at)
        self._counter = itertools.count(1)
        self._notification_ids = itertools.count(1)
        self.url_map = Map([
            Rule("/services/oauth2/token", methods=["POST"], endpoint="token"),
            Rule(f"{API}/composite/sobjects", methods=["POST"], endpoint="collection_create"),
            Rule(f"{API}/composite/sobjects", methods=["PATCH"], endpoint="collection_update"),
            Rule(f"{API}/composite/sobjects", methods=["DELETE"], endpoint="collection_delete"),
            Rule(f"{API}/query", methods=["GET"], endpoint="query"),
            Rule(f"{API}/query/", methods=["GET"], endpoint="query"),
            Rule(f"{API}/query/<locator>", methods=["GET"], endpoint="query_more"),
            Rule(f"{API}/sobjects/<object_type>/describe", methods=["GET"], endpoint="describe"),
            Rule(f"{API}/sobjects/<object_type>/deleted/", methods=["GET"], endpoint="get_deleted"),
            Rule(f"{API}/sobjects/Task", methods=["POST"], endpoint="create_task"),
        ], strict_slashes=False)
        self.add_user(INTEGRATION_USER_EMAIL, "Integration", "User", user_id=integration_user)
        self.add_user(HUMAN_USER_EMAIL, "Alex", "Admin", user_id=HUMAN_USER)

    # --- test controls -------------------------------------------------------------------------

    def expire_token_after(self, calls: int | None = None, at: float | None = None) -> None:
        with self.lock:
            for state in self.tokens.values():
                state["calls_left"], state["expires_at"] = calls, at

    def ui_edit(self, object_type: str, record_id: str | None, fields: dict, user_id: str = HUMAN_USER) -> dict:
        """A person creates (record_id None) or edits a record in Salesforce."""
        with self.lock:
            if record_id is None:
                return self._insert(object_type, fields, user_id)
            return self._update(object_type, record_id, fields, user_id)

    def ui_delete(self, object_type: str, record_id: str) -> None:
        """A person deletes a record (it goes to the Recycle Bin; Outbound Messages do not fire on delete)."""
        with self.lock:
            self.recycle_bin[record_id] = (object_type, self.records[object_type].pop(record_id))
            self.deleted_log.append((object_type, record_id, self.clock.now()))

    def add_user(self, email: str, first_name: str = "", last_name: str = "User", active: bool = True,
                 user_id: str | None = None) -> str:
        """A User of the org (who can own records while active); returns its Id."""
        with self.lock:
            user_id = user_id or self._new_id("User")
            self.records["User"][user_id] = {"Id": user_id, "Username": f"{email}.fakeorg", "Email": email,
                                             "FirstName": first_name, "LastName": last_name, "IsActive": active}
            return user_id

    def user_queries(self) -> list[CapturedRequest]:
        return [r for r in self.api_requests() if "FROM User" in (r.query.get("q") or [""])[0]]

    def convert_lead(self, lead_id: str, user_id: str = HUMAN_USER) -> str:
        """Lead conversion: an Account and a Contact are created; the Lead points at them."""
        with self.lock:
            lead = self.records["Lead"][lead_id]
            account = self._insert("Account", {"Name": lead.get("Company")}, user_id)
            contact_fields = {k: lead.get(k) for k in ("FirstName", "LastName", "Email", "Phone", "MobilePhone",
                                                        "Title", "OwnerId")}
            contact_fields.update({"MailingCountry": lead.get("Country"), "MailingState": lead.get("State"),
                                   "MailingCity": lead.get("City"), "AccountId": account["Id"]})
            contact = self._insert("Contact", contact_fields, user_id)
            self._update("Lead", lead_id, {"IsConverted": True, "ConvertedContactId": contact["Id"],
                                           "ConvertedAccountId": account["Id"], "Status": "Closed - Converted"},
                         user_id, system=True)
            return contact["Id"]

    def find(self, object_type: str, email: str) -> list[dict]:
        return [r for r in self.records[object_type].values() if (r.get("Email") or "").lower() == email.lower()]

    def api_requests(self) -> list[CapturedRequest]:
        return [r for r in self.requests if r.path.startswith(API)]

    def take_outbound_messages(self, object_type: str = "Lead", batch_size: int = 100) -> list[bytes]:
        """SOAP bodies of the Outbound Messages for the changes so far (drains the queue)."""
        with self.lock:
            ids, self.outbound[object_type] = self.outbound[object_type], []
            records = [dict(self.records[object_type][i]) for i in dict.fromkeys(ids)]
        return [self._soap(object_type, records[i:i + batch_size]) for i in range(0, len(records), batch_size)]

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        captured = CapturedRequest.of(request, body, at=self.clock.now())
        with self.lock:
            self.requests.append(captured)
        response = self._dispatch(request, body)
        captured.status = response.status_code
        captured.response_headers = dict(response.headers)
        return response(environ, start_response)

    def _dispatch(self, request: Request, body: bytes) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except Exception:  # noqa: BLE001 - werkzeug's NotFound/MethodNotAllowed: answer Salesforce-style
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        if endpoint == "token":
            return self.token(request)
        if self.before_dispatch is not None:
            self.before_dispatch(request)
        if not self._authenticated(request):
            return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        with self.lock:
            if self.api_used >= self.api_limit:
                return self._limited(_errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
            self.api_used += 1
        fault = self.faults.draw()
        if fault and fault.get("after"):      # the work is done, but the caller sees a failure (e.g. a timeout)
            self._handle(request, body, endpoint, args)
        if fault:
            response = _errors(fault["status"], "SERVER_UNAVAILABLE" if fault["status"] >= 500 else "UNABLE_TO_LOCK_ROW",
                               "injected failure")
            if fault.get("retry_after") is not None:
                response.headers["Retry-After"] = str(fault["retry_after"])
            return self._limited(response)
        return self._limited(self._handle(request, body, endpoint, args))

    def _handle(self, request: Request, body: bytes, endpoint: str, args: dict) -> Response:
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            return _errors(400, "JSON_PARSER_ERROR", "Unexpected character")
        with self.lock:
            return getattr(self, endpoint)(request, payload, **args)

    def _limited(self, response: Response) -> Response:
        response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_used}/{self.api_limit}"
        return response

    def _authenticated(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.lock:
            state = self.tokens.get(token)
            if state is None:
                return False
            if state["calls_left"] is not None:
                if state["calls_left"] <= 0:
                    return False
                state["calls_left"] -= 1
            return state["expires_at"] is None or self.clock.now() < state["expires_at"]

    # --- OAuth ---------------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        with self.lock:
            self.token_requests += 1
            form = request.form
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != REFRESH_TOKEN \
                    or form.get("client_id") != CLIENT_ID:
                return _json({"error": "invalid_grant", "error_description": "expired access/refresh token"}, 400)
            issued = self.clock.now_ms()
            access_token = f"00D5g000004ABCD!fake-refreshed-{next(self._counter)}"
            self.tokens[access_token] = {"expires_at": None, "calls_left": self.issued_token_calls}
        return _json({"access_token": access_token, "signature": "fake-signature=", "scope": "refresh_token api",
                      "instance_url": self.base_url, "id": f"{self.base_url}/id/{ORG_ID}/{self.integration_user}",
                      "token_type": "Bearer", "issued_at": str(issued)})

    # --- sObject Collections ---------------------------------------------------------------------

    def collection_create(self, request, payload) -> Response:
        return self._collection(payload, creating=True)

    def collection_update(self, request, payload) -> Response:
        return self._collection(payload, creating=False)

    def _collection(self, payload, creating: bool) -> Response:
        if not isinstance(payload, dict) or not isinstance(payload.get("records"), list):
            return _errors(400, "JSON_PARSER_ERROR", "records is required")
        records = payload["records"]
        if len(records) > 200:
            return _errors(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                                                     "into this call")
        for record in records:
            object_type = (record.get("attributes") or {}).get("type")
            if object_type not in self.describe_fields:
                return _errors(400, "INVALID_TYPE", f"sObject type '{object_type}' is not supported.")
            known = {f["name"] for f in self.describe_fields[object_type]}
            unknown = [k for k in record if k not in known and k not in ("attributes", "id")]
            if unknown:
                return _errors(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {object_type}")
        all_or_none = bool(payload.get("allOrNone"))
        checks = [self._check(record, creating) for record in records]
        if all_or_none and any(checks):
            return _json([self._rolled_back(record, error) for record, error in zip(records, checks)])
        results = []
        for record, error in zip(records, checks):
            if error:
                results.append({"success": False, "errors": [error], **({"id": record["id"]} if "id" in record else {})})
                continue
            object_type = record["attributes"]["type"]
            fields = {k: v for k, v in record.items() if k not in ("attributes", "id")}
            saved = self._insert(object_type, fields, self.integration_user) if creating else \
                self._update(object_type, record["id"], fields, self.integration_user)
            results.append({"id": saved["Id"], "success": True, "errors": []})
        return _json(results)

    def collection_delete(self, request, payload) -> Response:
        ids = [i for i in (request.args.get("ids") or "").split(",") if i]
        if not ids:
            return _errors(400, "MISSING_ARGUMENT", "ids parameter is required")
        if len(ids) > 200:
            return _errors(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                                                     "into this call")
        if request.args.get("allOrNone", "false").lower() == "true" and \
                any(self._object_of(i) is None for i in ids):
            return _json([{"id": i, "success": False, "errors": [_save_error(
                "ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid "
                "and the request was using AllOrNone header", [])]} for i in ids])
        results = []
        for record_id in ids:
            object_type = self._object_of(record_id)
            if object_type is None:
                code, message = ("ENTITY_IS_DELETED", "entity is deleted") if record_id in self.recycle_bin else \
                    ("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
                results.append({"id": record_id, "success": False, "errors": [_save_error(code, message, [])]})
                continue
            self.recycle_bin[record_id] = (object_type, self.records[object_type].pop(record_id))
            self.deleted_log.append((object_type, record_id, self.clock.now()))
            results.append({"id": record_id, "success": True, "errors": []})
        return _json(results)

    def _object_of(self, record_id: str) -> str | None:
        return next((name for name, records in self.records.items() if record_id in records), None)

    def _check(self, record: dict, creating: bool) -> dict | None:
        object_type = record["attributes"]["type"]
        fields = {f["name"]: f for f in self.describe_fields[object_type]}
        if creating and "id" in record:
            return _save_error("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"])
        if not creating:
            existing = self.records[object_type].get(record.get("id") or "")
            if existing is None:
                return _save_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            if existing.get("IsConverted"):
                return _save_error("CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", [])
        for name, value in record.items():
            spec = fields.get(name)
            if spec is None:
                continue
            if not spec["createable" if creating else "updateable"]:
                return _save_error("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}. "
                                   "Please check the security settings of this field.", [name])
            if isinstance(value, str) and spec["length"] and len(value) > spec["length"]:
                return _save_error("STRING_TOO_LONG", f"{name}: data value too large: {value} "
                                   f"(max length={spec['length']})", [name])
            if spec["type"] == "email" and value and "@" not in str(value):
                return _save_error("INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {value}", [name])
            if spec.get("restrictedPicklist") and value not in (None, "") and \
                    value not in [p["value"] for p in spec["picklistValues"]]:
                return _save_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                   f"{spec['label']}: bad value for restricted picklist field: {value}", [name])
        owner_error = self._owner_error(record.get("OwnerId")) if "OwnerId" in record else None
        if owner_error:
            return owner_error
        required = REQUIRED_ON_CREATE.get(object_type, ())
        missing = [n for n in required if (creating and not record.get(n)) or (n in record and not record.get(n))]
        if missing:
            return _save_error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        if creating and self.block_duplicates and record.get("Email") and \
                (self.find("Lead", record["Email"]) or self.find("Contact", record["Email"])):
            return _save_error("DUPLICATES_DETECTED", "Use one of these records?", [])
        return None

    def _owner_error(self, owner_id) -> dict | None:
        if not owner_id or not str(owner_id).startswith(OWNER_PREFIXES):
            return _save_error("INVALID_CROSS_REFERENCE_KEY", "Owner ID: id value of incorrect type", ["OwnerId"])
        user = next((u for i, u in self.records["User"].items() if i[:15] == str(owner_id)[:15]), None)
        if user is not None and not user["IsActive"]:
            return _save_error("INACTIVE_OWNER_OR_USER", "operation performed with inactive user as owner", [])
        return None

    @staticmethod
    def _rolled_back(record: dict, error: dict | None) -> dict:
        error = error or _save_error("ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all "
                                     "records were valid and the request was using AllOrNone header", [])
        return {**({"id": record["id"]} if "id" in record else {}), "success": False, "errors": [error]}

    # --- query, describe, tasks ------------------------------------------------------------------

    def query(self, request, payload) -> Response:
        try:
            parsed = soql.parse(request.args.get("q", ""))
        except soql.SoqlError as exc:
            return _errors(400, "MALFORMED_QUERY", str(exc))
        if parsed.object_type not in self.records:
            return _errors(400, "INVALID_TYPE", f"sObject type '{parsed.object_type}' is not supported.")
        known = {f["name"] for f in self.describe_fields.get(parsed.object_type, [])} | {"Account.Name", "Name"}
        unknown = [f for f in parsed.fields if f not in known]
        if unknown:
            return _errors(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on entity '{parsed.object_type}'.")
        rows = [r for r in self.records[parsed.object_type].values() if parsed.where is None or parsed.where(r)]
        for name, descending in reversed(parsed.order_by):
            rows.sort(key=lambda r: _sort_value(r.get(name)), reverse=descending)
        if parsed.limit is not None:
            rows = rows[:parsed.limit]
        shaped = [self._row(parsed.object_type, r, parsed.fields) for r in rows]
        return self._page(shaped, len(shaped))

    def query_more(self, request, payload, locator: str) -> Response:
        remaining = self.locators.pop(locator, None)
        if remaining is None:
            return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(remaining, int(locator.rsplit("-", 1)[1]) + len(remaining), offset=int(locator.rsplit("-", 1)[1]))

    def _page(self, rows: list[dict], total: int, offset: int = 0) -> Response:
        page, rest = rows[:self.page_size], rows[self.page_size:]
        body = {"totalSize": total, "done": not rest, "records": page}
        if rest:
            locator = f"01gD0000002HU6K{next(self._counter):04d}-{offset + len(page)}"
            self.locators[locator] = rest
            body["nextRecordsUrl"] = f"{API}/query/{locator}"
        return _json(body)

    def describe(self, request, payload, object_type: str) -> Response:
        if object_type not in self.describe_fields:
            return _errors(404, "NOT_FOUND", f"The requested resource does not exist")
        return _json({"name": object_type, "label": object_type, "keyPrefix": PREFIXES[object_type],
                      "createable": True, "updateable": True, "deletable": True, "queryable": True,
                      "fields": self.describe_fields[object_type]})

    def get_deleted(self, request, payload, object_type: str) -> Response:
        """Records deleted from `start` to `end`, both read to the minute (seconds ignored)."""
        try:
            start, end = (_minute(datetime.fromisoformat(request.args[name])) for name in ("start", "end"))
        except (KeyError, ValueError):
            return _errors(400, "INVALID_QUERY_FILTER_OPERATOR", "start and end must be ISO 8601 date-times")
        if end < start:
            return _errors(400, "INVALID_REPLICATION_DATE", "end date must be after start date")
        deleted = [{"id": record_id, "deletedDate": sf_datetime(at)} for kind, record_id, at in self.deleted_log
                   if kind == object_type and start <= at < end]
        earliest = sf_datetime(self.deleted_log[0][2]) if self.deleted_log else sf_datetime(start)
        return _json({"deletedRecords": deleted, "earliestDateAvailable": earliest,
                      "latestDateCovered": sf_datetime(end)})

    def create_task(self, request, payload) -> Response:
        record = {"attributes": {"type": "Task"}, **(payload or {})}
        error = self._check(record, creating=True)
        who = (payload or {}).get("WhoId")
        if error is None and who and who not in self.records["Lead"] and who not in self.records["Contact"]:
            error = _save_error("INVALID_CROSS_REFERENCE_KEY", "Name ID: id value of incorrect type", ["WhoId"])
        if error:
            return _json([{"message": error["message"], "errorCode": error["statusCode"], "fields": error["fields"]}], 400)
        saved = self._insert("Task", {k: v for k, v in payload.items()}, self.integration_user)
        return _json({"id": saved["Id"], "success": True, "errors": []}, 201)

    # --- record keeping --------------------------------------------------------------------------

    def _new_id(self, object_type: str) -> str:
        return f"{PREFIXES[object_type]}5g{next(self._counter):010d}AAA"

    def _stamp(self, record: dict, user_id: str) -> None:
        now = sf_datetime(self.clock.now())
        record.update({"LastModifiedDate": now, "LastModifiedById": user_id, "SystemModstamp": now})

    def _insert(self, object_type: str, fields: dict, user_id: str) -> dict:
        record_id = self._new_id(object_type)
        record = {name: None for name in (f["name"] for f in self.describe_fields.get(object_type, []))}
        record.update({k: v for k, v in fields.items()})
        record.update({"Id": record_id, "CreatedDate": sf_datetime(self.clock.now()), "CreatedById": user_id,
                       "OwnerId": fields.get("OwnerId") or user_id})
        if object_type == "Lead":
            record.setdefault("IsConverted", False)
            record["IsConverted"] = bool(record.get("IsConverted"))
            record["Status"] = record.get("Status") or LEAD_STATUSES[0]
        _derive(object_type, record)
        self._stamp(record, user_id)
        self.records[object_type][record_id] = record
        if object_type in self.outbound:
            self.outbound[object_type].append(record_id)
        return record

    def _update(self, object_type: str, record_id: str, fields: dict, user_id: str, system: bool = False) -> dict:
        record = self.records[object_type][record_id]
        record.update(fields)
        _derive(object_type, record)
        self._stamp(record, user_id)
        if object_type in self.outbound:
            self.outbound[object_type].append(record_id)
        return record

    def _row(self, object_type: str, record: dict, fields: list[str]) -> dict:
        row: dict = {"attributes": {"type": object_type, "url": f"{API}/sobjects/{object_type}/{record['Id']}"}}
        for name in fields:
            if name == "Account.Name":
                account = self.records["Account"].get(record.get("AccountId") or "")
                row["Account"] = None if account is None else {
                    "attributes": {"type": "Account", "url": f"{API}/sobjects/Account/{account['Id']}"},
                    "Name": account.get("Name")}
            else:
                row[name] = record.get(name)
        return row

    def _soap(self, object_type: str, records: list[dict]) -> bytes:
        notifications = []
        for record in records:
            fields = []
            for name in OUTBOUND_FIELDS[object_type]:
                value = record.get(name)
                if value is None:
                    continue   # null fields are left out of the message
                if isinstance(value, bool):
                    value = "true" if value else "false"
                elif name.endswith("Date") and isinstance(value, str) and value.endswith("+0000"):
                    value = soap_datetime(value)
                fields.append(f"     <sf:{name}>{escape(str(value))}</sf:{name}>")
            notification_id = f"04l5g{next(self._notification_ids):010d}AAV"
            notifications.append(
                f"   <Notification>\n    <Id>{notification_id}</Id>\n"
                f'    <sObject xsi:type="sf:{object_type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">\n'
                + "\n".join(fields) + "\n    </sObject>\n   </Notification>")
        instance = self.base_url or "https://example-dev-ed.my.salesforce.com"
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            ' <soapenv:Body>\n  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">\n'
            f"   <OrganizationId>{ORG_ID}</OrganizationId>\n   <ActionId>{ACTION_ID}</ActionId>\n"
            '   <SessionId xsi:nil="true"/>\n'
            f"   <EnterpriseUrl>{escape(instance)}/services/Soap/c/60.0/{ORG_ID[:15]}</EnterpriseUrl>\n"
            f"   <PartnerUrl>{escape(instance)}/services/Soap/u/60.0/{ORG_ID[:15]}</PartnerUrl>\n"
            + "\n".join(notifications) + "\n  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n"
        ).encode()


def _derive(object_type: str, record: dict) -> None:
    """Fields Salesforce computes: a Task's IsClosed follows its Status."""
    if object_type == "Task":
        record["Status"] = record.get("Status") or TASK_STATUSES[0]
        record["IsClosed"] = record["Status"] in CLOSED_TASK_STATUSES


def _minute(value: datetime) -> float:
    return value.astimezone(timezone.utc).replace(second=0, microsecond=0).timestamp()


def _sort_value(value):
    return (value is not None, value if value is not None else "")


def _save_error(code: str, message: str, fields: list[str]) -> dict:
    return {"statusCode": code, "message": message, "fields": fields}


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json;charset=UTF-8")


def _errors(status: int, code: str, message: str) -> Response:
    return _json([{"message": message, "errorCode": code}], status)
