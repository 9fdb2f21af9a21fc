"""A loopback HubSpot: contacts, properties, tasks and OAuth, in HubSpot's documented formats.

Endpoints (exactly the ones hub/connectors/hubspot.py and hub/sync/tokens.py use):
  POST /oauth/v1/token                              grant_type=refresh_token (form-encoded)
  POST /crm/v3/objects/contacts/batch/upsert        idProperty=email, ≤100 inputs; 200, or 207 + errors[].context.ids
  POST /crm/v3/objects/contacts/batch/update        by id, ≤100 inputs (an email change); 200, or 207 + errors
  POST /crm/v3/objects/contacts/batch/archive       by id, ≤100 inputs; 204 No Content whatever the ids' state
  POST /crm/v3/objects/contacts/batch/read          by id or idProperty=email; propertiesWithHistory; 207 for missing
  POST /crm/v3/objects/contacts/search              lastmodifieddate GTE filter, ascending sort, paging `after`
  GET  /crm/v3/objects/contacts                     list with `after` paging, properties, propertiesWithHistory
  GET  /crm/v3/properties/contacts                  property definitions
  POST /crm/v3/properties/contacts(/groups)         create property / group (409 when it exists)
  POST /crm/v3/objects/tasks                        task with an association to a contact
  POST /crm/v3/objects/tasks/batch/read             tasks by id, ≤100; 207 + OBJECT_NOT_FOUND for missing ids
  POST /crm/v3/objects/tasks/batch/update           properties by id, ≤100; hs_task_status from its options
  GET  /crm/v3/owners                               owners (PublicOwner), `limit` ≤500 and `after` paging

Test controls: `faults` (seeded fraction of 429/5xx with Retry-After, or exact `fail_next`), token
expiry (`expire_token_after(calls=N)` or at a fake-clock time), `requests` (every request captured),
`limiter` (110 req/10 s per portal: 429 when exceeded, `limiter.refused` counts them), `add_owner`
(a user who can own records: listed by the owners API and offered by `hubspot_owner_id`, which then
refuses unknown owner ids with INVALID_OPTION; `owners_scope = False` answers 403 MISSING_SCOPES), `ui_edit`
(a person's change in HubSpot), `ui_edit_task` (a rep completes a task), `ui_change_email` / `ui_delete`
(a person changes a contact's email / deletes it), and webhooks: every change queues contact.creation /
contact.propertyChange / contact.deletion events (changeSource INTEGRATION + sourceId = app id when written with a
token this fake issued to the hub's app) that `take_webhook_batches()` returns in batches of ≤100
and `signed_delivery()` signs with v3.
"""
from __future__ import annotations

import itertools
import json
import threading
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from hub.sandbox.common import CapturedRequest, FakeClock, FaultPlan, SlidingWindowLimiter
from hub.sandbox.signing import hubspot_v3_headers

PORTAL_ID = 62515
APP_ID = 54321
APP_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
REFRESH_TOKEN = "na1-6a2b-0000-4c1d-9e8f-fakerefreshtoken"
READ_ONLY = {"lastmodifieddate", "createdate", "hs_object_id"}
LIFECYCLE_STAGES = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                    "customer", "evangelist", "other"]
LEAD_STATUSES = ["NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT", "CONNECTED",
                 "BAD_TIMING"]
EMPLOYEE_RANGES = ["1-5", "5-25", "25-50", "50-100", "100-500", "500-1000", "1000+"]
TASK_STATUSES = ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED")   # hs_task_status options
OWNERS_MAX_LIMIT = 500
WEBHOOK_SUBSCRIPTIONS = {"contact.creation": 2107362, "contact.propertyChange": 2107370,
                         "contact.deletion": 2107380}


def _property(name, label, type_="string", field_type="text", options=None, group="contactinformation",
              read_only=False) -> dict:
    return {"name": name, "label": label, "type": type_, "fieldType": field_type, "groupName": group,
            "description": "", "displayOrder": -1, "hidden": False, "formField": True, "calculated": False,
            "externalOptions": False, "hasUniqueValue": name == "email",
            "options": [{"label": o, "value": o, "displayOrder": i, "hidden": False} for i, o in enumerate(options or [])],
            "modificationMetadata": {"archivable": not read_only, "readOnlyDefinition": True,
                                     "readOnlyValue": read_only},
            "createdAt": "2019-08-06T02:41:08.029Z", "updatedAt": "2019-08-06T02:41:08.029Z", "archived": False}


def default_properties(hub_properties: bool) -> dict[str, dict]:
    props = [
        _property("email", "Email"), _property("firstname", "First Name"), _property("lastname", "Last Name"),
        _property("phone", "Phone Number", field_type="phonenumber"), _property("mobilephone", "Mobile Phone Number"),
        _property("company", "Company Name"), _property("jobtitle", "Job Title"), _property("country", "Country/Region"),
        _property("state", "State/Region"), _property("city", "City"), _property("website", "Website URL"),
        _property("numemployees", "Number of Employees", "enumeration", "select", EMPLOYEE_RANGES),
        _property("industry", "Industry"),
        _property("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", LIFECYCLE_STAGES),
        _property("hs_lead_status", "Lead Status", "enumeration", "radio", LEAD_STATUSES),
        _property("hubspot_owner_id", "Contact owner", "enumeration", "select"),
        _property("lastmodifieddate", "Last Modified Date", "datetime", "date", read_only=True),
        _property("createdate", "Create Date", "datetime", "date", read_only=True),
        _property("hs_object_id", "Record ID", "number", "number", read_only=True),
    ]
    if hub_properties:
        props += [_property("hub_score", "Hub score", "number", "number", group="lead_hub"),
                  _property("hub_grade", "Hub grade", group="lead_hub"),
                  _property("hub_score_reasons", "Hub score reasons", field_type="textarea", group="lead_hub")]
    return {p["name"]: p for p in props}


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class HubSpotFake:
    """The WSGI app; `with serve(HubSpotFake()) as server:` runs it (hub/sandbox/server.py)."""

    def __init__(self, *, portal_id: int = PORTAL_ID, app_id: int = APP_ID, app_secret: str = APP_SECRET,
                 access_token: str = "hub-initial-access-token", hub_properties: bool = True,
                 clock: FakeClock | None = None, faults: FaultPlan | None = None,
                 rate: tuple[int, float] = (110, 10.0), search_rate: tuple[int, float] = (5, 1.0),
                 strict_batches: bool = False):
        """`strict_batches`: an input naming a property that does not exist fails the whole batch
        with 400 (as HubSpot answers for PROPERTY_DOESNT_EXIST) instead of a 207 error."""
        self.strict_batches = strict_batches
        self.issued_token_calls: int | None = None     # calls a freshly issued token allows (None: unlimited)
        self.portal_id = portal_id
        self.app_id = app_id
        self.app_secret = app_secret
        self.clock = clock or FakeClock()
        self.faults = faults or FaultPlan()
        self.limiter = SlidingWindowLimiter(*rate)
        self.search_limiter = SlidingWindowLimiter(*search_rate)
        self.base_url = ""
        self.lock = threading.RLock()
        self.contacts: dict[str, dict] = {}
        self.by_email: dict[str, str] = {}
        self.properties = default_properties(hub_properties)
        self.groups = {"contactinformation": {"name": "contactinformation", "label": "Contact information",
                                              "displayOrder": -1, "archived": False}}
        self.tasks: dict[str, dict] = {}
        self.archived: dict[str, dict] = {}             # contacts deleted (restorable in HubSpot for 90 days)
        self.owners: dict[str, dict] = {}
        self.owners_scope = True                       # False: the app lacks crm.objects.owners.read (403)
        self.requests: list[CapturedRequest] = []
        self.webhook_events: list[dict] = []
        self.token_requests = 0
        # token -> {"expires_at": epoch s | None, "calls_left": int | None}
        self.tokens: dict[str, dict] = {access_token: {"expires_at": None, "calls_left": None}}
        self._ids = itertools.count(1246965)
        self._event_ids = itertools.count(1946138022)
        self._issued = itertools.count(1)
        self.url_map = Map([
            Rule("/oauth/v1/token", methods=["POST"], endpoint="token"),
            Rule("/crm/v3/objects/contacts/batch/upsert", methods=["POST"], endpoint="batch_upsert"),
            Rule("/crm/v3/objects/contacts/batch/read", methods=["POST"], endpoint="batch_read"),
            Rule("/crm/v3/objects/contacts/batch/update", methods=["POST"], endpoint="batch_update"),
            Rule("/crm/v3/objects/contacts/batch/archive", methods=["POST"], endpoint="batch_archive"),
            Rule("/crm/v3/objects/contacts/search", methods=["POST"], endpoint="search"),
            Rule("/crm/v3/objects/contacts", methods=["GET"], endpoint="list_contacts"),
            Rule("/crm/v3/properties/contacts", methods=["GET"], endpoint="list_properties"),
            Rule("/crm/v3/properties/contacts", methods=["POST"], endpoint="create_property"),
            Rule("/crm/v3/properties/contacts/groups", methods=["POST"], endpoint="create_group"),
            Rule("/crm/v3/objects/tasks", methods=["POST"], endpoint="create_task"),
            Rule("/crm/v3/objects/tasks/batch/read", methods=["POST"], endpoint="batch_read_tasks"),
            Rule("/crm/v3/objects/tasks/batch/update", methods=["POST"], endpoint="batch_update_tasks"),
            Rule("/crm/v3/owners", methods=["GET"], endpoint="list_owners"),
            Rule("/crm/v3/owners/", methods=["GET"], endpoint="list_owners"),
        ])

    # --- test controls -------------------------------------------------------------------------

    def expire_token_after(self, calls: int | None = None, at: float | None = None, token: str | None = None) -> None:
        """The current token(s) stop working after `calls` more API calls, or at fake-clock time `at`."""
        with self.lock:
            for name, state in self.tokens.items():
                if token in (None, name):
                    state["calls_left"] = calls
                    state["expires_at"] = at

    def ui_edit(self, email: str, properties: dict, user_id: int = 4567890) -> dict:
        """A person edits a contact in HubSpot (changeSource CRM_UI); creates it if new."""
        with self.lock:
            return self._write(email.lower(), properties, "CRM_UI", f"userId:{user_id}")

    def ui_edit_task(self, task_id: str, properties: dict) -> dict:
        """A rep changes a task in HubSpot (e.g. hs_task_status COMPLETED)."""
        with self.lock:
            task = self.tasks[str(task_id)]
            task["properties"].update(properties)
            task["updatedAt"] = iso_ms(self.clock.now_ms())
            return task

    def ui_change_email(self, email: str, new_email: str, user_id: int = 4567890) -> dict:
        """A person changes a contact's email (HubSpot refuses an email another contact has)."""
        with self.lock:
            contact_id = self.by_email[email.lower()]
            if new_email.lower() in self.by_email:
                raise ValueError(f"another contact already has {new_email}")
            return self._rename(contact_id, new_email.lower(), "CRM_UI", f"userId:{user_id}")

    def ui_delete(self, email: str, user_id: int = 4567890) -> str:
        """A person deletes (archives) a contact; returns its id."""
        with self.lock:
            contact_id = self.by_email[email.lower()]
            self._archive(contact_id, "CRM_UI", f"userId:{user_id}")
            return contact_id
    def add_owner(self, email: str, first_name: str = "", last_name: str = "", owner_id: str | None = None) -> str:
        """A HubSpot user who can own records; returns the owner id (not the user id)."""
        with self.lock:
            owner_id = owner_id or str(next(self._ids) + 40_000_000)
            user_id = next(self._ids) + 9_000_000
            now = iso_ms(self.clock.now_ms())
            self.owners[owner_id] = {"id": owner_id, "email": email, "type": "PERSON", "firstName": first_name,
                                     "lastName": last_name, "userId": user_id, "userIdIncludingInactive": user_id,
                                     "createdAt": now, "updatedAt": now, "archived": False, "teams": []}
            options = self.properties["hubspot_owner_id"]["options"]
            options.append({"label": f"{first_name} {last_name}".strip() or email, "value": owner_id,
                            "displayOrder": len(options), "hidden": False})
            return owner_id

    def owner_requests(self) -> list[CapturedRequest]:
        return [r for r in self.requests if r.path.rstrip("/") == "/crm/v3/owners"]

    def contact_by_email(self, email: str) -> dict | None:
        contact_id = self.by_email.get(email.lower())
        return self.contacts.get(contact_id) if contact_id else None

    def take_webhook_batches(self, batch_size: int = 100) -> list[list[dict]]:
        """The webhook deliveries HubSpot would make for the changes so far (drains the queue)."""
        with self.lock:
            events, self.webhook_events = self.webhook_events, []
        return [events[i:i + batch_size] for i in range(0, len(events), batch_size)]

    def signed_delivery(self, batch: list[dict], url: str, timestamp_ms: int | None = None) -> tuple[bytes, dict]:
        """(body, headers) of a v3-signed POST of `batch` to `url` (the hub's public webhook URL)."""
        body = json.dumps(batch, separators=(",", ":")).encode()
        return body, hubspot_v3_headers(self.app_secret, "POST", url, body, timestamp_ms)

    def api_requests(self, path_prefix: str = "/crm/") -> list[CapturedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    # --- WSGI ----------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        captured = CapturedRequest.of(request, body, at=self.clock.now())
        with self.lock:
            self.requests.append(captured)
        response = self._dispatch(request, body)
        response.headers["X-HubSpot-Correlation-Id"] = str(uuid.uuid4())
        captured.status = response.status_code
        captured.response_headers = dict(response.headers)
        return response(environ, start_response)

    def _dispatch(self, request: Request, body: bytes) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except Exception:  # noqa: BLE001 - werkzeug's NotFound/MethodNotAllowed: answer HubSpot-style 404
            return self._error(404, "OBJECT_NOT_FOUND", f"no route {request.method} {request.path}")
        if endpoint == "token":
            return self.token(request)
        search = endpoint == "search"
        if not (self.search_limiter if search else self.limiter).allow():
            return self._rate_limited(search)
        auth = self._authenticate(request)
        if isinstance(auth, Response):
            return auth
        fault = self.faults.draw()
        if fault:
            return self._fault(fault)
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return self._error(400, "VALIDATION_ERROR", "Invalid input JSON")
        with self.lock:
            response = getattr(self, endpoint)(request, payload, **args)
        if not search:
            response.headers["X-HubSpot-RateLimit-Max"] = str(self.limiter.limit)
            response.headers["X-HubSpot-RateLimit-Remaining"] = str(self.limiter.remaining())
            response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(self.limiter.window * 1000))
        return response

    def _authenticate(self, request: Request):
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.lock:
            state = self.tokens.get(token)
            if state is not None and state["calls_left"] is not None:
                if state["calls_left"] <= 0:
                    state = None
                else:
                    state["calls_left"] -= 1
            if state is not None and state["expires_at"] is not None and self.clock.now() >= state["expires_at"]:
                state = None
        if state is None:
            return self._error(401, "EXPIRED_AUTHENTICATION", "The OAuth token used to make this call expired.")
        request.environ["fake.token"] = token
        return token

    # --- OAuth ---------------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        with self.lock:
            self.token_requests += 1
            form = request.form
            if (form.get("grant_type") != "refresh_token" or form.get("refresh_token") != REFRESH_TOKEN
                    or form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET):
                return _json({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                              "correlationId": str(uuid.uuid4())}, 400)
            access_token = f"fake-hs-access-{next(self._issued)}"
            self.tokens[access_token] = {"expires_at": self.clock.now() + 1800, "calls_left": self.issued_token_calls}
        return _json({"token_type": "bearer", "refresh_token": REFRESH_TOKEN, "access_token": access_token,
                      "expires_in": 1800})

    # --- contacts ------------------------------------------------------------------------------

    def batch_upsert(self, request, payload) -> Response:
        inputs, refused = self._batch_inputs(payload)
        if refused:
            return refused
        ids = [str(i.get("id", "")).lower() for i in inputs]
        if len(set(ids)) != len(ids):
            return self._error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        if self.strict_batches:
            for item in inputs:
                unknown = [n for n in (item.get("properties") or {}) if n not in self.properties]
                if unknown:
                    problem = {"isValid": False, "message": f'Property "{unknown[0]}" does not exist',
                               "error": "PROPERTY_DOESNT_EXIST", "name": unknown[0]}
                    return self._error(400, "VALIDATION_ERROR", "Property values were not valid: "
                                       + json.dumps([problem], separators=(",", ":")))
        results, errors = [], []
        for item, email in zip(inputs, ids):
            if item.get("idProperty") != "email":
                errors.append(self._item_error("VALIDATION_ERROR", "idProperty must be a unique property", email))
                continue
            problems = self._validate_properties(item.get("properties") or {}, email)
            if problems:
                errors.append(self._item_error("VALIDATION_ERROR", "Property values were not valid: "
                                               + json.dumps(problems, separators=(",", ":")), email))
                continue
            existed = email in self.by_email
            contact = self._write(email, item.get("properties") or {}, "INTEGRATION", str(self.app_id))
            results.append({**self._public(contact, None, None), "new": not existed})
        return self._batch_answer(results, errors)

    def batch_update(self, request, payload) -> Response:
        """Partial update by record id; a new email must not belong to another contact."""
        inputs, refused = self._batch_inputs(payload)
        if refused:
            return refused
        results, errors = [], []
        for item in inputs:
            contact_id = str(item.get("id", ""))
            contact = self.contacts.get(contact_id)
            properties = dict(item.get("properties") or {})
            new_email = str(properties.pop("email", "") or "").strip().lower()
            if contact is None:
                errors.append(self._item_error("OBJECT_NOT_FOUND", "Object not found.", contact_id))
                continue
            problems = self._validate_properties(properties, new_email or contact["values"]["email"])
            holder = self.by_email.get(new_email)
            if holder not in (None, contact_id):
                errors.append(self._item_error("CONFLICT", f"Contact already exists. Existing ID: {holder}",
                                               contact_id))
                continue
            if problems:
                errors.append(self._item_error("VALIDATION_ERROR", "Property values were not valid: "
                                               + json.dumps(problems, separators=(",", ":")), contact_id))
                continue
            if new_email and new_email != contact["values"]["email"]:
                self._rename(contact_id, new_email, "INTEGRATION", str(self.app_id))
            self._write(contact["values"]["email"], properties, "INTEGRATION", str(self.app_id))
            results.append(self._public(contact, None, None))
        return self._batch_answer(results, errors)

    def batch_archive(self, request, payload) -> Response:
        """204 No Content on success, whatever the ids' state (archived already, or never existed)."""
        inputs, refused = self._batch_inputs(payload)
        if refused:
            return refused
        for item in inputs:
            if str(item.get("id", "")) in self.contacts:
                self._archive(str(item["id"]), "INTEGRATION", str(self.app_id))
        return Response(status=204)

    def batch_read(self, request, payload) -> Response:
        inputs = payload.get("inputs") or []
        if len(inputs) > 100:
            return self._error(400, "VALIDATION_ERROR", "Batch input limit is 100")
        id_property = payload.get("idProperty")
        props, history = payload.get("properties"), payload.get("propertiesWithHistory")
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id", ""))
            contact_id = self.by_email.get(key.lower()) if id_property == "email" else key
            contact = self.contacts.get(contact_id or "")
            if contact is None:
                missing.append(key)
                continue
            results.append(self._public(contact, props, history))
        return self._batch_answer(results, [self._not_found("CONTACT", missing)] if missing else [])

    def search(self, request, payload) -> Response:
        limit = int(payload.get("limit") or 10)
        after = int(payload.get("after") or 0)
        if limit > 200 or after + limit > 10000:
            return self._error(400, "VALIDATION_ERROR", "search can page through at most 10,000 results")
        matches = [c for c in self.contacts.values() if self._matches(c, payload.get("filterGroups") or [])]
        for sort in reversed(payload.get("sorts") or []):
            name = sort.get("propertyName") if isinstance(sort, dict) else str(sort).lstrip("-")
            descending = (sort.get("direction") == "DESCENDING") if isinstance(sort, dict) else str(sort).startswith("-")
            matches.sort(key=lambda c: self._sort_key(c, name), reverse=descending)
        page = matches[after:after + limit]
        body = {"total": len(matches), "results": [self._public(c, payload.get("properties"), None) for c in page]}
        if after + limit < len(matches):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return _json(body)

    def list_contacts(self, request, payload) -> Response:
        props = _list_param(request, "properties")
        history = _list_param(request, "propertiesWithHistory")
        limit = int(request.args.get("limit") or 10)
        if limit > (50 if history else 100):
            return self._error(400, "VALIDATION_ERROR", "limit too large")
        after = int(request.args.get("after") or 0)
        ordered = sorted(self.contacts.values(), key=lambda c: int(c["id"]))
        page = [c for c in ordered if int(c["id"]) >= after][:limit + 1]
        body = {"results": [self._public(c, props or None, history or None) for c in page[:limit]]}
        if len(page) > limit:
            link = f"{self.base_url}/crm/v3/objects/contacts?after={page[limit]['id']}"
            body["paging"] = {"next": {"after": page[limit]["id"], "link": link}}
        return _json(body)

    def list_owners(self, request, payload) -> Response:
        if not self.owners_scope:
            return self._error(403, "MISSING_SCOPES", "This app hasn't been granted all required scopes to make "
                               "this call. Read more about required scopes here: https://developers.hubspot.com/scopes.")
        limit = int(request.args.get("limit") or 100)
        if not 1 <= limit <= OWNERS_MAX_LIMIT:
            return self._error(400, "VALIDATION_ERROR", f"limit must be between 1 and {OWNERS_MAX_LIMIT}")
        archived = (request.args.get("archived") or "false").lower() == "true"
        email = (request.args.get("email") or "").lower()
        after = int(request.args.get("after") or 0)
        ordered = sorted((o for o in self.owners.values() if o["archived"] == archived
                          and (not email or o["email"].lower() == email)), key=lambda o: int(o["id"]))
        page = [o for o in ordered if int(o["id"]) >= after][:limit + 1]
        body = {"results": page[:limit]}
        if len(page) > limit:
            link = f"{self.base_url}/crm/v3/owners/?limit={limit}&after={page[limit]['id']}"
            body["paging"] = {"next": {"after": page[limit]["id"], "link": link}}
        return _json(body)

    # --- properties and tasks --------------------------------------------------------------------

    def list_properties(self, request, payload) -> Response:
        return _json({"results": list(self.properties.values())})

    def create_property(self, request, payload) -> Response:
        name = payload.get("name")
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not payload.get(k)]
        if missing:
            return self._error(400, "VALIDATION_ERROR", f"missing {', '.join(missing)}")
        if name in self.properties:
            return self._error(409, "OBJECT_ALREADY_EXISTS", f"A property named '{name}' already exists.")
        if payload["groupName"] not in self.groups:
            return self._error(400, "VALIDATION_ERROR", f"property group {payload['groupName']} does not exist")
        prop = _property(name, payload["label"], payload["type"], payload["fieldType"],
                         [o.get("value") for o in payload.get("options") or []], payload["groupName"])
        prop["description"] = payload.get("description") or ""
        self.properties[name] = prop
        return _json(prop, 201)

    def create_group(self, request, payload) -> Response:
        name = payload.get("name")
        if not name or not payload.get("label"):
            return self._error(400, "VALIDATION_ERROR", "name and label are required")
        if name in self.groups:
            return self._error(409, "OBJECT_ALREADY_EXISTS", f"A property group named '{name}' already exists.")
        self.groups[name] = {"name": name, "label": payload["label"], "displayOrder": payload.get("displayOrder", -1),
                             "archived": False}
        return _json(self.groups[name], 201)

    def create_task(self, request, payload) -> Response:
        properties = payload.get("properties") or {}
        if not properties.get("hs_timestamp"):
            return self._error(400, "VALIDATION_ERROR", "hs_timestamp is required")
        if _task_status_problem(properties):
            return self._error(400, "VALIDATION_ERROR", _task_status_problem(properties))
        for association in payload.get("associations") or []:
            if str(association.get("to", {}).get("id")) not in self.contacts:
                return self._error(400, "VALIDATION_ERROR", "association target does not exist")
        task_id = str(next(self._ids) + 50_000_000)
        now = iso_ms(self.clock.now_ms())
        task = {"id": task_id, "properties": {**properties, "hs_object_id": task_id}, "createdAt": now,
                "updatedAt": now, "archived": False, "associations": payload.get("associations") or []}
        self.tasks[task_id] = task
        return _json({k: v for k, v in task.items() if k != "associations"}, 201)

    def batch_read_tasks(self, request, payload) -> Response:
        inputs, refused = self._batch_inputs(payload)
        if refused:
            return refused
        wanted = ["hs_createdate", "hs_lastmodifieddate", "hs_object_id", *(payload.get("properties") or [])]
        found, missing = self._tasks_by_id(inputs)
        return self._task_batch_answer([self._public_task(task, wanted) for task, _ in found], missing)

    def batch_update_tasks(self, request, payload) -> Response:
        inputs, refused = self._batch_inputs(payload)
        if refused:
            return refused
        for item in inputs:
            problem = _task_status_problem(item.get("properties") or {})
            if problem:
                return self._error(400, "VALIDATION_ERROR", problem)
        found, missing = self._tasks_by_id(inputs)
        results = []
        for task, properties in found:
            task["properties"].update(properties)
            task["updatedAt"] = iso_ms(self.clock.now_ms())
            results.append(self._public_task(task, ["hs_createdate", "hs_lastmodifieddate", "hs_object_id",
                                                    *properties]))
        return self._task_batch_answer(results, missing)

    def _tasks_by_id(self, inputs: list[dict]) -> tuple[list[tuple[dict, dict]], list[str]]:
        """(task, the input's properties) for each id found, and the ids not found."""
        found, missing = [], []
        for item in inputs:
            task = self.tasks.get(str(item.get("id", "")))
            if task is None:
                missing.append(str(item.get("id", "")))
            else:
                found.append((task, dict(item.get("properties") or {})))
        return found, missing

    def _public_task(self, task: dict, wanted: list[str]) -> dict:
        values = {**task["properties"], "hs_createdate": task["createdAt"], "hs_lastmodifieddate": task["updatedAt"]}
        return {"id": task["id"], "properties": {name: values.get(name) for name in wanted},
                "createdAt": task["createdAt"], "updatedAt": task["updatedAt"], "archived": False}

    def _task_batch_answer(self, results: list[dict], missing: list[str]) -> Response:
        return self._batch_answer(results, [self._not_found("TASK", missing)] if missing else [])

    # --- batch plumbing (HubSpot's batch API shapes) ---------------------------------------------

    def _batch_inputs(self, payload) -> tuple[list, Response | None]:
        """The batch's inputs, or the 400 HubSpot answers for an empty or oversized batch."""
        inputs = payload.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return [], self._error(400, "VALIDATION_ERROR", "inputs must be a non-empty list")
        if len(inputs) > 100:
            return [], self._error(400, "VALIDATION_ERROR", "Batch input limit is 100")
        return inputs, None

    def _batch_answer(self, results: list[dict], errors: list[dict]) -> Response:
        """200 with the results, or 207 Multi-Status with the errors beside them."""
        now = iso_ms(self.clock.now_ms())
        body = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
        if errors:
            return _json({**body, "numErrors": len(errors), "errors": errors}, 207)
        return _json(body, 200)

    def _not_found(self, object_name: str, ids: list[str]) -> dict:
        return self._item_error("OBJECT_NOT_FOUND", f"Could not get some {object_name} objects, they may be deleted "
                                "or not exist.", *ids)

    # --- record keeping --------------------------------------------------------------------------

    def _write(self, email: str, properties: dict, source_type: str, source_id: str) -> dict:
        now = self.clock.now_ms()
        contact_id = self.by_email.get(email)
        created = contact_id is None
        if created:
            contact_id = str(next(self._ids))
            self.by_email[email] = contact_id
            self.contacts[contact_id] = {"id": contact_id, "values": {}, "history": {}, "created": now,
                                         "updated": now}
            self._event("contact.creation", contact_id, now, source_type, source_id, changeFlag="CREATED")
        contact = self.contacts[contact_id]
        changes = {"email": email, **{k: ("" if v is None else str(v)) for k, v in properties.items() if k != "email"}}
        for name, value in changes.items():
            if contact["values"].get(name, "") == value and not created:
                continue
            if created and value == "":
                continue
            contact["values"][name] = value
            contact["history"].setdefault(name, []).insert(0, {"value": value, "timestamp": now,
                                                               "sourceType": source_type, "sourceId": source_id})
            self._event("contact.propertyChange", contact_id, now, source_type, source_id,
                        propertyName=name, propertyValue=value)
        contact["updated"] = now
        return contact

    def _rename(self, contact_id: str, new_email: str, source_type: str, source_id: str) -> dict:
        contact = self.contacts[contact_id]
        self.by_email.pop(contact["values"]["email"], None)
        self.by_email[new_email] = contact_id
        return self._write(new_email, {}, source_type, source_id)

    def _archive(self, contact_id: str, source_type: str, source_id: str) -> None:
        contact = self.contacts.pop(contact_id)
        self.by_email.pop(contact["values"].get("email", ""), None)
        self.archived[contact_id] = contact
        self._event("contact.deletion", contact_id, self.clock.now_ms(), source_type, source_id, changeFlag="DELETED")

    def _event(self, kind: str, contact_id: str, now: int, source_type: str, source_id: str, **extra) -> None:
        self.webhook_events.append({
            "eventId": next(self._event_ids), "subscriptionId": WEBHOOK_SUBSCRIPTIONS[kind],
            "portalId": self.portal_id, "appId": self.app_id, "occurredAt": now, "subscriptionType": kind,
            "attemptNumber": 0, "objectId": int(contact_id), **extra, "changeSource": source_type,
            "sourceId": source_id})

    def _public(self, contact: dict, props, history) -> dict:
        values = {**contact["values"], "hs_object_id": contact["id"], "createdate": iso_ms(contact["created"]),
                  "lastmodifieddate": iso_ms(contact["updated"])}
        wanted = props if props else ["firstname", "lastname", "email", "createdate", "lastmodifieddate",
                                      "hs_object_id"]
        body = {"id": contact["id"], "properties": {name: values.get(name) for name in wanted},
                "createdAt": iso_ms(contact["created"]), "updatedAt": iso_ms(contact["updated"]), "archived": False}
        if history:
            body["propertiesWithHistory"] = {
                name: [{"value": h["value"], "timestamp": iso_ms(h["timestamp"]), "sourceType": h["sourceType"],
                        "sourceId": h["sourceId"]} for h in contact["history"].get(name, [])]
                for name in history}
        return body

    def _validate_properties(self, properties: dict, email: str) -> list[dict]:
        problems = []
        if "@" not in email:
            problems.append({"isValid": False, "message": f"Email address {email} is invalid",
                             "error": "INVALID_EMAIL", "name": "email"})
        for name, value in properties.items():
            prop = self.properties.get(name)
            if prop is None:
                problems.append({"isValid": False, "message": f'Property "{name}" does not exist',
                                 "error": "PROPERTY_DOESNT_EXIST", "name": name})
            elif name in READ_ONLY:
                problems.append({"isValid": False, "message": f"{name} is a read only property; its value cannot "
                                 "be set.", "error": "READ_ONLY_VALUE", "name": name})
            elif prop["type"] == "enumeration" and value not in ("", None) and prop["options"] and \
                    value not in [o["value"] for o in prop["options"]]:
                allowed = ", ".join(o["value"] for o in prop["options"])
                problems.append({"isValid": False, "message": f"{value} was not one of the allowed options: "
                                 f"[{allowed}]", "error": "INVALID_OPTION", "name": name})
            elif prop["type"] == "number" and value not in ("", None) and not _is_number(value):
                problems.append({"isValid": False, "message": f"{value} is not a valid number",
                                 "error": "INVALID_INTEGER", "name": name})
        return problems

    def _matches(self, contact: dict, filter_groups: list[dict]) -> bool:
        if not filter_groups:
            return True
        return any(all(self._filter(contact, f) for f in group.get("filters") or []) for group in filter_groups)

    def _filter(self, contact: dict, spec: dict) -> bool:
        name, operator, value = spec.get("propertyName"), spec.get("operator"), spec.get("value")
        if name == "lastmodifieddate":
            actual, expected = contact["updated"], int(value)
        elif name == "createdate":
            actual, expected = contact["created"], int(value)
        else:
            actual, expected = contact["values"].get(name), value
        comparisons = {"GTE": lambda: actual >= expected, "GT": lambda: actual > expected,
                       "LTE": lambda: actual <= expected, "LT": lambda: actual < expected,
                       "EQ": lambda: actual == expected, "IN": lambda: actual in (spec.get("values") or [])}
        return comparisons[operator]()

    @staticmethod
    def _sort_key(contact: dict, name: str):
        if name == "lastmodifieddate":
            return contact["updated"], int(contact["id"])
        if name == "createdate":
            return contact["created"], int(contact["id"])
        return contact["values"].get(name) or "", int(contact["id"])

    # --- answers ---------------------------------------------------------------------------------

    def _item_error(self, category: str, message: str, *ids: str) -> dict:
        return {"status": "error", "category": category, "message": message, "context": {"ids": list(ids)},
                "errors": [], "links": {}}

    def _error(self, status: int, category: str, message: str) -> Response:
        return _json({"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                      "category": category}, status)

    def _rate_limited(self, search: bool) -> Response:
        response = _json({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                          "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                          "policyName": "SECONDLY" if search else "TEN_SECONDLY_ROLLING",
                          "requestId": str(uuid.uuid4())}, 429)
        if not search:
            response.headers["X-HubSpot-RateLimit-Max"] = str(self.limiter.limit)
            response.headers["X-HubSpot-RateLimit-Remaining"] = "0"
            response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(self.limiter.window * 1000))
        return response

    def _fault(self, fault: dict) -> Response:
        status = fault["status"]
        if status == 429:
            policy = fault.get("policy") or "TEN_SECONDLY_ROLLING"
            message = "You have reached your daily limit." if policy == "DAILY" else \
                "You have reached your ten_secondly_rolling limit."
            response = _json({"status": "error", "message": message, "errorType": "RATE_LIMIT",
                              "correlationId": str(uuid.uuid4()), "policyName": policy,
                              "requestId": str(uuid.uuid4())}, 429)
        else:
            category = {423: "LOCKED"}.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
            response = self._error(status, category, "injected failure")
        if fault.get("retry_after") is not None:
            response.headers["Retry-After"] = str(fault["retry_after"])
        return response


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json;charset=utf-8")


def _list_param(request: Request, name: str) -> list[str]:
    values = []
    for raw in request.args.getlist(name):
        values.extend(v for v in raw.split(",") if v)
    return values


def _task_status_problem(properties: dict) -> str | None:
    status = properties.get("hs_task_status")
    if status is not None and status not in TASK_STATUSES:
        return f"{status} was not one of the allowed options: [{', '.join(TASK_STATUSES)}]"
    return None


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def public_url_path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
