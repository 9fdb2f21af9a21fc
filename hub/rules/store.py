"""Per-workspace rule documents: marshmallow schemas, versioned storage, compiled-rule cache.

A rule document is the JSON form of a `RuleSet`. Loading validates every field and compiles
every expression against the names it may use, so a typo or an unsafe expression is refused when
the rules are saved (with the path to the bad field), never discovered per contact. Saving writes
a new version; the newest version is live. A workspace without a document uses the preset named
by `workspace.settings["rules_model"]` (default b2b).
"""
from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import asdict

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema
from sqlalchemy import func, select

from hub.models import RuleSet as RuleSetRow
from hub.models import Workspace
from hub.rules.context import ACTIVITY_NAMES, EVALUATION_NAMES, PROFILE_NAMES
from hub.rules.expressions import ExpressionError, compile_expression
from hub.rules.grading import GradeBand, GradeRule
from hub.rules.mql import MqlPolicy
from hub.rules.presets import PRESETS
from hub.rules.routing import RoutingPolicy, Territory
from hub.rules.ruleset import MODELS, SLA_ACTIONS, CompiledRules, DecayPolicy, RuleSet, SlaPolicy
from hub.rules.scoring import ActivityRule, ProfileRule
from hub.rules.segments import MESSAGE_CHANNELS, TRIGGER_ACTIONS, TRIGGER_EVENTS, Segment, Trigger

logger = logging.getLogger(__name__)

NAME = validate.Regexp(r"^[a-z][a-z0-9_]{0,62}$", error="use lower-case letters, digits and _ (max 63)")
KIND = validate.Regexp(r"^[a-z][a-z0-9_.]{0,39}$", error="an activity kind such as form_submit")


class ActivityRuleSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(required=True, validate=KIND)
    points = fields.Float(required=True, allow_nan=False, validate=validate.Range(-1000, 1000))
    when = fields.String(load_default="")
    daily_cap = fields.Float(allow_none=True, load_default=None, validate=validate.Range(min=0))
    total_cap = fields.Float(allow_none=True, load_default=None, validate=validate.Range(min=0))
    decays = fields.Boolean(load_default=True)
    label = fields.String(load_default="", validate=validate.Length(max=80))

    @post_load
    def build(self, data, **kwargs):
        return ActivityRule(**data)


class ProfileRuleSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    points = fields.Float(required=True, allow_nan=False, validate=validate.Range(-1000, 1000))
    when = fields.String(required=True)
    label = fields.String(load_default="", validate=validate.Length(max=80))

    @post_load
    def build(self, data, **kwargs):
        return ProfileRule(**data)


class GradeRuleSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    dimension = fields.String(required=True, validate=NAME)
    points = fields.Float(required=True, allow_nan=False, validate=validate.Range(-1000, 1000))
    when = fields.String(load_default="")
    label = fields.String(load_default="", validate=validate.Length(max=80))

    @post_load
    def build(self, data, **kwargs):
        return GradeRule(**data)


class GradeBandSchema(Schema):
    grade = fields.String(required=True, validate=validate.Regexp(r"^[A-Z][+-]?$"))
    min_points = fields.Float(required=True, allow_none=True, allow_nan=False)   # null: the floor band

    @post_load
    def build(self, data, **kwargs):
        floor = data["min_points"] is None
        return GradeBand(data["grade"], float("-inf") if floor else data["min_points"])


class TriggerSchema(Schema):
    on = fields.String(required=True, validate=validate.OneOf(TRIGGER_EVENTS))
    action = fields.String(required=True, validate=validate.OneOf(TRIGGER_ACTIONS))
    params = fields.Dict(keys=fields.String(), load_default=dict)

    @validates_schema(skip_on_field_errors=True)
    def message_channel(self, data, **kwargs):
        channel = data["params"].get("channel", "email")
        if data["action"] == "message" and channel not in MESSAGE_CHANNELS:
            raise ValidationError({"channel": [f"one of {', '.join(MESSAGE_CHANNELS)}"]}, "params")

    @post_load
    def build(self, data, **kwargs):
        return Trigger(**data)


class SegmentSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    when = fields.String(required=True)
    exit_when = fields.String(load_default="")
    triggers = fields.List(fields.Nested(TriggerSchema), load_default=list)

    @post_load
    def build(self, data, **kwargs):
        return Segment(data["name"], data["when"], data["exit_when"], tuple(data["triggers"]))


class MqlSchema(Schema):
    enter_score = fields.Float(required=True, allow_nan=False)
    exit_score = fields.Float(required=True, allow_nan=False)
    enter_grades = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    keep_grades = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    segment = fields.String(load_default="mql", validate=NAME)
    on_enter = fields.List(fields.Nested(TriggerSchema), load_default=lambda: [{"on": "enter", "action": "handoff"}])

    @validates_schema
    def hysteresis(self, data, **kwargs):
        if data["exit_score"] > data["enter_score"]:
            raise ValidationError("exit_score must not be above enter_score", "exit_score")
        if not set(data["enter_grades"]) <= set(data["keep_grades"]):
            raise ValidationError("every enter grade must also be a keep grade", "keep_grades")

    @post_load
    def build(self, data, **kwargs):
        triggers = tuple(t if isinstance(t, Trigger) else TriggerSchema().load(t) for t in data["on_enter"])
        return MqlPolicy(data["enter_score"], data["exit_score"], tuple(data["enter_grades"]),
                         tuple(data["keep_grades"]), data["segment"], triggers)


class DecaySchema(Schema):
    half_life_days = fields.Float(allow_none=True, load_default=30.0, validate=validate.Range(min=0.01))

    @post_load
    def build(self, data, **kwargs):
        return DecayPolicy(**data)


class TerritorySchema(Schema):
    name = fields.String(required=True, validate=NAME)
    when = fields.String(required=True)
    reps = fields.List(fields.Email(), required=True, validate=validate.Length(min=1))

    @post_load
    def build(self, data, **kwargs):
        return Territory(data["name"], data["when"], tuple(data["reps"]))


class RoutingSchema(Schema):
    territories = fields.List(fields.Nested(TerritorySchema), load_default=list)
    account_owner_first = fields.Boolean(load_default=True)

    @post_load
    def build(self, data, **kwargs):
        return RoutingPolicy(tuple(data["territories"]), data["account_owner_first"])


class SlaSchema(Schema):
    hours = fields.Float(required=True, validate=validate.Range(min=0.01, max=24 * 90))
    action = fields.String(load_default="reassign", validate=validate.OneOf(SLA_ACTIONS))
    max_reassignments = fields.Integer(load_default=2, validate=validate.Range(0, 20))
    escalate_to = fields.String(allow_none=True, load_default=None)

    @post_load
    def build(self, data, **kwargs):
        return SlaPolicy(**data)


def _names_unique(items, what: str) -> None:
    seen = set()
    for item in items:
        if item.name in seen:
            raise ValidationError(f"duplicate {what} name '{item.name}'")
        seen.add(item.name)


class RuleSetSchema(Schema):
    model = fields.String(required=True, validate=validate.OneOf(MODELS))
    activity_rules = fields.List(fields.Nested(ActivityRuleSchema), load_default=list)
    profile_rules = fields.List(fields.Nested(ProfileRuleSchema), load_default=list)
    grade_rules = fields.List(fields.Nested(GradeRuleSchema), load_default=list)
    grade_bands = fields.List(fields.Nested(GradeBandSchema), required=True, validate=validate.Length(min=1))
    segments = fields.List(fields.Nested(SegmentSchema), load_default=list)
    mql = fields.Nested(MqlSchema, required=True)
    decay = fields.Nested(DecaySchema, load_default=lambda: DecayPolicy())
    routing = fields.Nested(RoutingSchema, load_default=lambda: RoutingPolicy())
    sla = fields.Nested(SlaSchema, load_default=lambda: SlaPolicy())
    lists = fields.Dict(keys=fields.String(validate=NAME), values=fields.List(fields.String()), load_default=dict)

    @validates_schema(skip_on_field_errors=True)
    def expressions_compile(self, data, **kwargs):
        lists = frozenset(data["lists"])
        clash = lists & (PROFILE_NAMES | ACTIVITY_NAMES | EVALUATION_NAMES)
        if clash:
            raise ValidationError(f"list names clash with built-in names: {sorted(clash)}", "lists")
        errors: dict = {}
        checks = [
            ("activity_rules", data["activity_rules"], PROFILE_NAMES | ACTIVITY_NAMES, ("when",)),
            ("profile_rules", data["profile_rules"], PROFILE_NAMES, ("when",)),
            ("grade_rules", data["grade_rules"], PROFILE_NAMES, ("when",)),
            ("segments", data["segments"], PROFILE_NAMES | EVALUATION_NAMES, ("when", "exit_when")),
            ("territories", data["routing"].territories, PROFILE_NAMES, ("when",)),
        ]
        for section, items, names, attributes in checks:
            for index, item in enumerate(items):
                for attribute in attributes:
                    try:
                        compile_expression(getattr(item, attribute), names | lists)
                    except ExpressionError as exc:
                        errors.setdefault(section, {}).setdefault(index, {})[attribute] = [str(exc)]
        if errors:
            raise ValidationError(errors)
        for key, what in (("activity_rules", "rule"), ("profile_rules", "rule"), ("grade_rules", "rule"),
                          ("segments", "segment")):
            _names_unique(data[key], what)
        if any(s.name == data["mql"].segment for s in data["segments"]):
            raise ValidationError(f"segment '{data['mql'].segment}' is the MQL segment", "segments")
        grades = {band.grade for band in data["grade_bands"]}
        unknown = (set(data["mql"].enter_grades) | set(data["mql"].keep_grades)) - grades
        if unknown:
            raise ValidationError(f"MQL grades not in grade_bands: {sorted(unknown)}", "mql")

    @post_load
    def build(self, data, **kwargs):
        return RuleSet(
            model=data["model"], activity_rules=tuple(data["activity_rules"]),
            profile_rules=tuple(data["profile_rules"]), grade_rules=tuple(data["grade_rules"]),
            grade_bands=tuple(data["grade_bands"]), segments=tuple(data["segments"]), mql=data["mql"],
            decay=data["decay"], routing=data["routing"], sla=data["sla"],
            lists={name: tuple(values) for name, values in data["lists"].items()})


def parse_document(document: dict) -> RuleSet:
    """Validate a rule document; raises marshmallow.ValidationError with per-field messages."""
    return RuleSetSchema().load(document)


def to_document(rules: RuleSet) -> dict:
    """The JSON document of a RuleSet (round-trips through parse_document)."""
    document = asdict(rules)
    for band in document["grade_bands"]:
        if band["min_points"] is not None and math.isinf(band["min_points"]):
            band["min_points"] = None
    document["lists"] = {name: list(values) for name, values in rules.lists.items()}
    return json.loads(json.dumps(document))      # plain JSON types (lists, not tuples)


def _preset_for(session, workspace_id: str) -> RuleSet:
    workspace = session.get(Workspace, workspace_id)
    model = ((workspace.settings or {}).get("rules_model") if workspace else None) or "b2b"
    return PRESETS.get(model, PRESETS["b2b"])


def load_rules(session, workspace_id: str) -> tuple[int, RuleSet]:
    """(version, rules) live for the workspace; version 0 is the preset."""
    row = session.scalar(select(RuleSetRow).where(RuleSetRow.workspace_id == workspace_id)
                         .order_by(RuleSetRow.version.desc()).limit(1))
    if row is None:
        return 0, _preset_for(session, workspace_id)
    return row.version, parse_document(row.document)


def save_rules(session, workspace_id: str, document: dict) -> int:
    """Validate and store a new version; returns it."""
    parse_document(document)
    current = session.scalar(select(func.max(RuleSetRow.version)).where(RuleSetRow.workspace_id == workspace_id)) or 0
    session.add(RuleSetRow(workspace_id=workspace_id, version=current + 1, document=document))
    session.flush()
    _CACHE.clear()
    return current + 1


_CACHE: "OrderedDict[tuple, CompiledRules]" = OrderedDict()
_CACHE_SIZE = 64


def compiled_rules(session, workspace_id: str) -> tuple[int, CompiledRules]:
    """The live rules, parsed and compiled once per (workspace, version) in this process."""
    version = session.scalar(select(func.max(RuleSetRow.version)).where(RuleSetRow.workspace_id == workspace_id)) or 0
    preset = _preset_for(session, workspace_id) if version == 0 else None
    key = (workspace_id, version, preset.model if preset else None)
    compiled = _CACHE.get(key)
    if compiled is None:
        rules = preset or load_rules(session, workspace_id)[1]
        compiled = CompiledRules(rules)
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return version, compiled
