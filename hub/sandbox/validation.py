"""Check captured CRM requests against the vendors' documented formats and limits.

HubSpot: each request must hit a documented endpoint, respect its limits (≤100 batch inputs,
idProperty=email for upserts, record ids for batch update/archive, ≤200 search results per page, ≤500 owners per
page) and its body must deserialise into the
hubspot-api-client request model with client-side validation on, with no key the model does not
know (checked recursively against the models' attribute maps). HubSpot's OpenAPI files are not
used (they are proprietary); the SDK's models are generated from them.

Salesforce: sObject Collections bodies as in the REST API guide
(`{"allOrNone": false, "records": [{"attributes": {"type": "Lead"}, ...}]}`, ≤200 records, `id`
only on updates; deletes as `?ids=...&allOrNone=false`, ≤200 ids), Get Deleted windows, SOQL that parses
(Lead, Contact, Task, and User for the owner directory), describe and Task paths, OAuth refresh form fields, and
the Authorization / Sforce-Call-Options headers on every API call. Tasks: created with sobjects/Task, read by SOQL,
updated (Status, Description) through collections; HubSpot tasks batch read/update by id.

`hubspot_violations(requests)` / `salesforce_violations(requests)` return a list of strings
(empty = valid); tests assert it is empty.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import parse_qs

import hubspot.crm.contacts as contacts_sdk
import hubspot.crm.objects.tasks as tasks_sdk
import hubspot.crm.properties as properties_sdk

from hub.sandbox import soql
from hub.sandbox.common import CapturedRequest
from hub.sandbox.hubspot_fake import TASK_STATUSES as HUBSPOT_TASK_STATUSES

HUBSPOT_BATCH_LIMIT = 100
HUBSPOT_SEARCH_LIMIT = 200
HUBSPOT_OWNERS_LIMIT = 500
OWNERS_PARAMETERS = {"email", "after", "limit", "archived"}
SALESFORCE_COLLECTION_LIMIT = 200
SALESFORCE_API = "/services/data/v60.0"
# HubSpot's search docs give sorts as {"propertyName", "direction"} objects; the SDK types them as
# strings, so these two keys are the one allowed extension of the SDK model.
SEARCH_SORT_KEYS = {"propertyName", "direction"}


# --- HubSpot ----------------------------------------------------------------------------------------

def _sdk_check(package, model_name: str, data, path: str = "$") -> list[str]:
    """Deserialise `data` into package.<model_name> with client-side validation, and find unknown keys."""
    configuration = package.Configuration()
    configuration.client_side_validation = True
    api_client = package.ApiClient(configuration=configuration)
    try:
        api_client.deserialize(SimpleNamespace(data=json.dumps(data)), model_name)
    except (ValueError, TypeError) as exc:
        return [f"{path}: does not deserialise into {model_name}: {exc}"]
    return _unknown_keys(package, model_name, data, path)


def _unknown_keys(package, type_name: str, data, path: str) -> list[str]:
    list_match = re.fullmatch(r"list\[(.+)\]", type_name)
    if list_match:
        if not isinstance(data, list):
            return [f"{path}: expected a list"]
        problems = []
        for index, item in enumerate(data):
            problems += _unknown_keys(package, list_match.group(1), item, f"{path}[{index}]")
        return problems
    dict_match = re.fullmatch(r"dict\(str, (.+)\)|dict\[str, (.+)\]", type_name)
    if dict_match:
        inner = dict_match.group(1) or dict_match.group(2)
        if not isinstance(data, dict):
            return [f"{path}: expected an object"]
        problems = []
        for key, value in data.items():
            problems += _unknown_keys(package, inner, value, f"{path}.{key}")
        return problems
    if type_name in ("str", "int", "float", "bool", "datetime", "date", "object"):
        if type_name == "str" and not isinstance(data, str) and data is not None:
            if path.endswith("]") and ".sorts[" in path and isinstance(data, dict) and set(data) <= SEARCH_SORT_KEYS:
                return []
            return [f"{path}: expected a string, got {type(data).__name__}"]
        return []
    model = getattr(package.models, type_name, None)
    if model is None:
        return [f"{path}: unknown SDK type {type_name}"]
    if not isinstance(data, dict):
        return [f"{path}: expected an object for {type_name}"]
    by_key = {json_key: attr for attr, json_key in model.attribute_map.items()}
    problems = [f"{path}.{key}: not a field of {type_name}" for key in data if key not in by_key]
    for key, value in data.items():
        if key in by_key:
            problems += _unknown_keys(package, model.openapi_types[by_key[key]], value, f"{path}.{key}")
    return problems


def _check_batch_upsert(request: CapturedRequest) -> list[str]:
    body = request.json()
    problems = _sdk_check(contacts_sdk, "BatchInputSimplePublicObjectBatchInputUpsert", body)
    inputs = (body or {}).get("inputs") or []
    if not 1 <= len(inputs) <= HUBSPOT_BATCH_LIMIT:
        problems.append(f"batch upsert has {len(inputs)} inputs (1..{HUBSPOT_BATCH_LIMIT})")
    ids = [str(i.get("id", "")).lower() for i in inputs]
    if len(set(ids)) != len(ids):
        problems.append("batch upsert repeats an id")
    for index, item in enumerate(inputs):
        if item.get("idProperty") != "email":
            problems.append(f"inputs[{index}].idProperty is {item.get('idProperty')!r}, not 'email'")
        if "@" not in str(item.get("id", "")):
            problems.append(f"inputs[{index}].id is not an email")
    return problems


def _check_batch_read(request: CapturedRequest) -> list[str]:
    body = request.json()
    problems = _sdk_check(contacts_sdk, "BatchReadInputSimplePublicObjectId", body)
    inputs = (body or {}).get("inputs") or []
    if not 1 <= len(inputs) <= HUBSPOT_BATCH_LIMIT:
        problems.append(f"batch read has {len(inputs)} inputs (1..{HUBSPOT_BATCH_LIMIT})")
    if (body or {}).get("idProperty") not in (None, "email"):
        problems.append(f"batch read idProperty {body.get('idProperty')!r}")
    return problems


def _check_batch_by_id(model_name: str, operation: str):
    """Batch update / archive: the SDK model, ≤100 inputs, each naming a record id (digits), none twice."""
    def check(request: CapturedRequest) -> list[str]:
        body = request.json()
        problems = _sdk_check(contacts_sdk, model_name, body)
        inputs = (body or {}).get("inputs") or []
        if not 1 <= len(inputs) <= HUBSPOT_BATCH_LIMIT:
            problems.append(f"batch {operation} has {len(inputs)} inputs (1..{HUBSPOT_BATCH_LIMIT})")
        ids = [str(i.get("id", "")) for i in inputs]
        if len(set(ids)) != len(ids):
            problems.append(f"batch {operation} repeats an id")
        problems += [f"inputs[{n}].id {i!r} is not a record id" for n, i in enumerate(ids) if not i.isdigit()]
        problems += [f"inputs[{n}] has idProperty (an update by id names none)" for n, item in enumerate(inputs)
                     if item.get("idProperty")]
        return problems
    return check


def _check_search(request: CapturedRequest) -> list[str]:
    body = request.json()
    problems = _sdk_check(contacts_sdk, "PublicObjectSearchRequest", body)
    if int((body or {}).get("limit") or 10) > HUBSPOT_SEARCH_LIMIT:
        problems.append(f"search limit {body.get('limit')} > {HUBSPOT_SEARCH_LIMIT}")
    for group in (body or {}).get("filterGroups") or []:
        for spec in group.get("filters") or []:
            if spec.get("operator") not in {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
                                             "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
                                             "NOT_CONTAINS_TOKEN"}:
                problems.append(f"search filter operator {spec.get('operator')!r}")
    return problems


def _check_task_batch_read(request: CapturedRequest) -> list[str]:
    body = request.json()
    problems = _sdk_check(tasks_sdk, "BatchReadInputSimplePublicObjectId", body)
    inputs = (body or {}).get("inputs") or []
    if not 1 <= len(inputs) <= HUBSPOT_BATCH_LIMIT:
        problems.append(f"task batch read has {len(inputs)} inputs (1..{HUBSPOT_BATCH_LIMIT})")
    if (body or {}).get("idProperty") is not None:
        problems.append("task batch read by idProperty (tasks are read by id)")
    return problems


def _check_task_batch_update(request: CapturedRequest) -> list[str]:
    body = request.json()
    problems = _sdk_check(tasks_sdk, "BatchInputSimplePublicObjectBatchInput", body)
    inputs = (body or {}).get("inputs") or []
    if not 1 <= len(inputs) <= HUBSPOT_BATCH_LIMIT:
        problems.append(f"task batch update has {len(inputs)} inputs (1..{HUBSPOT_BATCH_LIMIT})")
    for index, item in enumerate(inputs):
        status = (item.get("properties") or {}).get("hs_task_status")
        if status is not None and status not in HUBSPOT_TASK_STATUSES:
            problems.append(f"inputs[{index}].properties.hs_task_status {status!r} is not an hs_task_status option")
    return problems


def _check_list(request: CapturedRequest) -> list[str]:
    limit = int((request.query.get("limit") or ["10"])[0])
    cap = 50 if request.query.get("propertiesWithHistory") else 100
    return [f"list limit {limit} > {cap}"] if limit > cap else []


def _check_model(package, model_name: str):
    def check(request: CapturedRequest) -> list[str]:
        return _sdk_check(package, model_name, request.json())
    return check


def _check_hubspot_token(request: CapturedRequest) -> list[str]:
    problems = []
    if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        problems.append("token request is not form-encoded")
    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    if form.get("grant_type") != "refresh_token":
        problems.append(f"grant_type {form.get('grant_type')!r}")
    problems += [f"token request lacks {name}" for name in ("refresh_token", "client_id", "client_secret")
                 if not form.get(name)]
    return problems


def _no_body(request: CapturedRequest) -> list[str]:
    return ["GET with a body"] if request.body else []


def _check_owners(request: CapturedRequest) -> list[str]:
    """GET /crm/v3/owners: the SDK's OwnersApi.get_page parameters (email, after, limit ≤500, archived)."""
    problems = _no_body(request)
    problems += [f"owners list parameter {name!r}" for name in request.query if name not in OWNERS_PARAMETERS]
    limit = (request.query.get("limit") or ["100"])[0]
    if not limit.isdigit() or not 1 <= int(limit) <= HUBSPOT_OWNERS_LIMIT:
        problems.append(f"owners limit {limit} not in 1..{HUBSPOT_OWNERS_LIMIT}")
    return problems


HUBSPOT_ENDPOINTS = (
    ("POST", r"/crm/v3/objects/contacts/batch/upsert", _check_batch_upsert),
    ("POST", r"/crm/v3/objects/contacts/batch/read", _check_batch_read),
    ("POST", r"/crm/v3/objects/contacts/batch/update",
     _check_batch_by_id("BatchInputSimplePublicObjectBatchInput", "update")),
    ("POST", r"/crm/v3/objects/contacts/batch/archive", _check_batch_by_id("BatchInputSimplePublicObjectId", "archive")),
    ("POST", r"/crm/v3/objects/contacts/search", _check_search),
    ("GET", r"/crm/v3/objects/contacts", _check_list),
    ("GET", r"/crm/v3/properties/contacts", _no_body),
    ("POST", r"/crm/v3/properties/contacts", _check_model(properties_sdk, "PropertyCreate")),
    ("POST", r"/crm/v3/properties/contacts/groups", _check_model(properties_sdk, "PropertyGroupCreate")),
    ("POST", r"/crm/v3/objects/tasks", _check_model(tasks_sdk, "SimplePublicObjectInputForCreate")),
    ("POST", r"/crm/v3/objects/tasks/batch/read", _check_task_batch_read),
    ("POST", r"/crm/v3/objects/tasks/batch/update", _check_task_batch_update),
    ("GET", r"/crm/v3/owners/?", _check_owners),
    ("POST", r"/oauth/v1/token", _check_hubspot_token),
)


def _violations(requests: list[CapturedRequest], endpoints, header_problems) -> list[str]:
    """Each request must match an allowed (method, path) and pass its body and header checks."""
    problems = []
    for number, request in enumerate(requests):
        label = f"#{number} {request.method} {request.path}"
        check = next((c for method, path, c in endpoints
                      if method == request.method and re.fullmatch(path, request.path)), None)
        if check is None:
            problems.append(f"{label}: not an endpoint the hub may call")
            continue
        problems += [f"{label}: {p}" for p in header_problems(request) + list(check(request))]
    return problems


def _hubspot_header_problems(request: CapturedRequest) -> list[str]:
    if request.path.startswith("/crm/") and not request.headers.get("Authorization", "").startswith("Bearer "):
        return ["no Bearer token"]
    return []


def hubspot_violations(requests: list[CapturedRequest]) -> list[str]:
    return _violations(requests, HUBSPOT_ENDPOINTS, _hubspot_header_problems)


# --- Salesforce -------------------------------------------------------------------------------------

# Field names of the objects the hub writes (REST API Object Reference + the hub's custom fields).
SALESFORCE_WRITABLE = {
    "Lead": {"FirstName", "LastName", "Company", "Email", "Phone", "MobilePhone", "Title", "Country", "State",
             "City", "Website", "NumberOfEmployees", "Industry", "Status", "LeadSource", "Rating", "OwnerId",
             "Hub_Score__c", "Hub_Grade__c", "Hub_Score_Reasons__c"},
    "Contact": {"FirstName", "LastName", "Email", "Phone", "MobilePhone", "Title", "MailingCountry", "MailingState",
                "MailingCity", "OwnerId", "AccountId", "Hub_Score__c", "Hub_Grade__c", "Hub_Score_Reasons__c"},
    "Task": {"Status", "Description"},      # updates only (the SLA defers a reassigned lead's task)
}
USER_FIELDS = {"Id", "Email", "IsActive", "FirstName", "LastName"}
TASK_FIELDS = {"WhoId", "Subject", "Description", "ActivityDate", "Status", "Priority", "OwnerId"}
TASK_READ_FIELDS = {"Id", "Status", "IsClosed", "Description"} | TASK_FIELDS


def collection_violations(body, method: str) -> list[str]:
    """An sObject Collections create (POST) or update (PATCH) body."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    problems = [f"unknown top-level key {k!r}" for k in body if k not in ("allOrNone", "records")]
    if not isinstance(body.get("allOrNone"), bool):
        problems.append("allOrNone is not a boolean")
    elif body["allOrNone"]:
        problems.append("allOrNone is true (one bad record would fail the batch)")
    records = body.get("records")
    if not isinstance(records, list) or not 1 <= len(records) <= SALESFORCE_COLLECTION_LIMIT:
        return problems + [f"records must hold 1..{SALESFORCE_COLLECTION_LIMIT} records"]
    for index, record in enumerate(records):
        object_type = (record.get("attributes") or {}).get("type")
        if object_type not in SALESFORCE_WRITABLE:
            problems.append(f"records[{index}].attributes.type is {object_type!r}")
            continue
        if method == "PATCH" and not re.fullmatch(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", str(record.get("id", ""))):
            problems.append(f"records[{index}] has no valid id for an update")
        if method == "POST" and "id" in record:
            problems.append(f"records[{index}] carries an id in a create")
        if method == "POST" and object_type == "Task":
            problems.append(f"records[{index}]: Tasks are created with sobjects/Task, not collections")
        for name, value in record.items():
            if name in ("attributes", "id"):
                continue
            if name not in SALESFORCE_WRITABLE[object_type]:
                problems.append(f"records[{index}].{name} is not a writable {object_type} field")
            if isinstance(value, (dict, list)):
                problems.append(f"records[{index}].{name} is not a scalar")
    return problems


def _check_collection(request: CapturedRequest) -> list[str]:
    problems = collection_violations(request.json(), request.method)
    if not request.headers.get("Content-Type", "").startswith("application/json"):
        problems.append("collections call is not application/json")
    return problems


def _check_collection_delete(request: CapturedRequest) -> list[str]:
    """`DELETE composite/sobjects?ids=a,b&allOrNone=false`: 1..200 record ids, no body."""
    ids = [i for i in (request.query.get("ids") or [""])[0].split(",") if i]
    problems = [] if 1 <= len(ids) <= SALESFORCE_COLLECTION_LIMIT else [
        f"ids must name 1..{SALESFORCE_COLLECTION_LIMIT} records"]
    problems += [f"ids[{n}] {i!r} is not a record id" for n, i in enumerate(ids)
                 if not re.fullmatch(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", i)]
    if (request.query.get("allOrNone") or [""])[0] != "false":
        problems.append("allOrNone is not false (one record that cannot be deleted would fail the batch)")
    if request.body:
        problems.append("DELETE with a body")
    return problems


def _check_get_deleted(request: CapturedRequest) -> list[str]:
    """Get Deleted: `start` and `end` as ISO 8601 date-times with an offset, start before end."""
    problems = _no_body(request)
    values = {}
    for name in ("start", "end"):
        text = (request.query.get(name) or [""])[0]
        if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)", text):
            problems.append(f"{name} {text!r} is not an ISO 8601 date-time with an offset")
        else:
            values[name] = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if len(values) == 2 and values["end"] < values["start"]:
        problems.append("end is before start")
    return problems


def _check_query(request: CapturedRequest) -> list[str]:
    text = (request.query.get("q") or [""])[0]
    try:
        parsed = soql.parse(text)
    except soql.SoqlError as exc:
        return [f"SOQL does not parse: {exc}"]
    problems = []
    if re.search(r"\d{4}-\d\d-\d\dT[\d:.]+\+0000", text):
        problems.append("SOQL datetime literal uses +0000 (literals need Z or +hh:mm)")
    if parsed.object_type not in ("Lead", "Contact", "Task", "User"):
        problems.append(f"query on {parsed.object_type}")
    elif parsed.object_type == "Task" and not set(parsed.fields) <= TASK_READ_FIELDS:
        problems.append(f"Task query reads {sorted(set(parsed.fields) - TASK_READ_FIELDS)}")
    elif parsed.object_type == "User" and not set(parsed.fields) <= USER_FIELDS:
        problems.append(f"User fields {sorted(set(parsed.fields) - USER_FIELDS)} are not read by the hub")
    return problems


def _check_task(request: CapturedRequest) -> list[str]:
    body = request.json() or {}
    problems = [f"Task.{k} is not a Task field" for k in body if k not in TASK_FIELDS]
    problems += [f"Task lacks {k}" for k in ("WhoId", "Subject") if not body.get(k)]
    return problems


def _check_salesforce_token(request: CapturedRequest) -> list[str]:
    form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
    problems = [] if form.get("grant_type") == "refresh_token" else [f"grant_type {form.get('grant_type')!r}"]
    return problems + [f"token request lacks {n}" for n in ("refresh_token", "client_id") if not form.get(n)]


SALESFORCE_ENDPOINTS = (
    ("POST", rf"{SALESFORCE_API}/composite/sobjects", _check_collection),
    ("PATCH", rf"{SALESFORCE_API}/composite/sobjects", _check_collection),
    ("DELETE", rf"{SALESFORCE_API}/composite/sobjects", _check_collection_delete),
    ("GET", rf"{SALESFORCE_API}/query/?", _check_query),
    ("GET", rf"{SALESFORCE_API}/query/[A-Za-z0-9]+-\d+", _no_body),
    ("GET", rf"{SALESFORCE_API}/sobjects/(Lead|Contact|Task)/describe", _no_body),
    ("GET", rf"{SALESFORCE_API}/sobjects/(Lead|Contact)/deleted/?", _check_get_deleted),
    ("POST", rf"{SALESFORCE_API}/sobjects/Task", _check_task),
    ("POST", r"/services/oauth2/token", _check_salesforce_token),
)


def _salesforce_header_problems(request: CapturedRequest) -> list[str]:
    if not request.path.startswith(SALESFORCE_API):
        return []
    problems = []
    if not request.headers.get("Authorization", "").startswith("Bearer "):
        problems.append("no Bearer token")
    if not request.headers.get("Sforce-Call-Options", "").startswith("client="):
        problems.append("no Sforce-Call-Options client id")
    return problems


def salesforce_violations(requests: list[CapturedRequest]) -> list[str]:
    return _violations(requests, SALESFORCE_ENDPOINTS, _salesforce_header_problems)
