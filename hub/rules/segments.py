"""Dynamic segments and their triggers.

A `Segment` is a rule over the evaluated contact (profile names plus score, grade, mql). Entering
needs `when`; a member leaves when `exit_when` holds (or, without one, when `when` stops holding) —
an `exit_when` looser than `when` is hysteresis, which is how the MQL segment avoids flapping.
Entering or leaving fires the segment's `Trigger`s: handoff, notice, crm_update or message
(hub.rules.effects runs them, each once, by idempotency key).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hub.rules.context import EVALUATION_NAMES, PROFILE_NAMES
from hub.rules.expressions import Expression, compile_expression

TRIGGER_ACTIONS = ("handoff", "notice", "crm_update", "message")
TRIGGER_EVENTS = ("enter", "leave")
MESSAGE_CHANNELS = ("email", "sms", "webhook")   # `message` params.channel (default email; hub.rules.messages)


@dataclass(frozen=True)
class Trigger:
    on: str                                 # enter | leave
    action: str                             # handoff | notice | crm_update | message
    params: dict = field(default_factory=dict, hash=False)   # {"text": ...} | {"fields": {...}} | {"channel": ...}


@dataclass(frozen=True)
class Segment:
    name: str
    when: str
    exit_when: str = ""
    triggers: tuple[Trigger, ...] = ()


@dataclass
class SegmentChange:
    members: set[str] = field(default_factory=set)
    entered: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


class SegmentEvaluator:
    """Compiles segments once; `evaluate()` is pure."""

    def __init__(self, segments: tuple[Segment, ...], list_names: frozenset[str] = frozenset()):
        allowed = PROFILE_NAMES | EVALUATION_NAMES | list_names
        self.segments = segments
        self.compiled: list[tuple[Segment, Expression, Expression | None]] = [
            (s, compile_expression(s.when, allowed), compile_expression(s.exit_when, allowed) if s.exit_when else None)
            for s in segments
        ]
        self.by_name = {s.name: s for s in segments}

    def evaluate(self, context: dict, current: set[str]) -> SegmentChange:
        change = SegmentChange()
        for segment, when, exit_when in self.compiled:
            if segment.name in current:
                stays = not exit_when.fn(context) if exit_when is not None else bool(when.fn(context))
                if stays:
                    change.members.add(segment.name)
                else:
                    change.left.append(segment.name)
            elif when.fn(context):
                change.members.add(segment.name)
                change.entered.append(segment.name)
        return change

    def triggers(self, segment: str, on: str) -> tuple[Trigger, ...]:
        found = self.by_name.get(segment)
        return tuple(t for t in found.triggers if t.on == on) if found else ()
