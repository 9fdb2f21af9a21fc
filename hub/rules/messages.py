"""Messages to contacts (the `message` effect): the channels, the consent rules, and delivering one.

Channels (`params.channel`, default email):
- email: through the workspace's notice channel when it is an email (SMTP) one, to the contact's address;
- sms: a Twilio channel (hub.connectors.sms), to the contact's mobile phone, else phone (E.164);
- webhook: a signed Standard Webhooks POST (hub.connectors.webhook) to the workspace's own system.
sms and webhook settings are validated by their kind and stored encrypted in
`workspace.settings["message_channels"][channel]` (`hub notice channel`).

Before anything is sent: an erased contact (custom "erased_at") never gets a message; email needs the
contact's email consent and sms their sms consent (`consent[channel]["granted"]` true; missing or
withdrawn is no consent); webhook hands data to the workspace's own system and needs none; then the
channel's frequency cap (hub.rules.caps) must leave room. A message not sent is a done effect with
result {"skipped": reason}; the log line names ids and the reason, never the person.
"""
from __future__ import annotations

import logging
from datetime import datetime

from hub.changes import CONTACT_FIELDS
from hub.connectors.notice import Notice, NoticeKind
from hub.exceptions import FatalError
from hub.models import Contact, LeadEffect, utcnow
from hub.rules import caps
from hub.rules.notices import (
    channel_for,
    kind_class,
    stored_channel,
    update_workspace_settings,
    workspace_settings,
)
from hub.rules.segments import MESSAGE_CHANNELS

logger = logging.getLogger(__name__)

SETTINGS_KEY = "message_channels"
OWN_CHANNELS = ("sms", "webhook")          # configured here; email uses the notice channel
CONSENT_NEEDED = {"email": "email", "sms": "sms", "webhook": None}
ADDRESSED = ("email", "sms")               # channels that need the contact's own address


# --- channel settings -------------------------------------------------------------------------------

def channel_kind(channel: str) -> type[NoticeKind]:
    """The kind class of a contact channel configured here (FatalError UNKNOWN_KIND otherwise)."""
    return kind_class(channel, OWN_CHANNELS, "message channel")


def configure_channel(runtime, workspace_id: str, channel: str, settings: dict) -> dict:
    """Validate and store a contact channel (sms, webhook); returns its settings, secrets masked.

    FatalError (unknown channel, no workspace) or marshmallow.ValidationError (bad settings): nothing stored.
    """
    kind = channel_kind(channel)
    validated = kind(settings).settings
    entry = {"kind": channel, "settings": runtime.vault.encrypt(validated)}
    update_workspace_settings(runtime, workspace_id, lambda stored: {
        **stored, SETTINGS_KEY: {**(stored.get(SETTINGS_KEY) or {}), channel: entry}})
    return kind.masked_settings(validated)


def _entries(runtime, workspace_id: str) -> tuple[dict, dict]:
    settings = workspace_settings(runtime, workspace_id)
    return settings.get(SETTINGS_KEY) or {}, settings


def show_channels(runtime, workspace_id: str) -> dict:
    """{"channels": {channel: {kind, settings (masked)}}, "caps": {channel: {max, days}}}."""
    entries, settings = _entries(runtime, workspace_id)
    channels = {}
    for channel, entry in sorted(entries.items()):
        kind = channel_kind(entry["kind"])
        channels[channel] = {"kind": kind.kind,
                             "settings": kind.masked_settings(runtime.vault.decrypt_json(entry["settings"]))}
    return {"channels": channels, "caps": caps.caps_of(settings)}


def message_channel(runtime, workspace_id: str, channel: str) -> NoticeKind | None:
    """The channel's sender, or None when the workspace has not set it up."""
    if channel == "email":
        notice = channel_for(runtime, workspace_id)
        return notice if notice is not None and notice.kind == "email" else None
    entry = _entries(runtime, workspace_id)[0].get(channel)
    if not entry:
        return None
    return stored_channel(runtime, channel_kind(entry["kind"]), entry["settings"])


# --- the rules before sending ------------------------------------------------------------------------

def consented(contact: Contact, channel: str) -> bool:
    """Whether the contact's consent allows `channel` (a bare boolean is an older shape of the same flag)."""
    needed = CONSENT_NEEDED[channel]
    if needed is None:
        return True
    entry = (contact.consent or {}).get(needed)
    return (entry.get("granted") if isinstance(entry, dict) else entry) is True


def address(contact: Contact, channel: str) -> str | None:
    """Where an addressed message goes: the email address, or the phone number (E.164; mobile first)."""
    return {"email": contact.email, "sms": contact.mobile_phone or contact.phone}.get(channel)


def refusal(contact: Contact, channel: str) -> str | None:
    """Why the contact must not get a message on `channel` (erased, no_consent, no_address), or None."""
    if "erased_at" in (contact.custom or {}):
        return "erased"
    if not consented(contact, channel):
        return "no_consent"
    if channel in ADDRESSED and not address(contact, channel):
        return "no_address"
    return None


# --- delivering ---------------------------------------------------------------------------------------

def compose(contact: Contact, effect: LeadEffect, channel: str, subject: str, text: str) -> Notice:
    """The message for `channel`; a webhook gets the event data (its kind keeps only the listed fields)."""
    if channel == "webhook":
        on = effect.params.get("on", "enter")
        return Notice(subject=subject, text=text, idempotency_key=effect.idempotency_key,
                      event_type=f"contact.segment_{'entered' if on == 'enter' else 'left'}",
                      data={"contact_id": contact.id, "segment": effect.params.get("segment", ""),
                            "score": contact.score, "grade": contact.grade,
                            "contact": {name: getattr(contact, name) for name in CONTACT_FIELDS}})
    return Notice(subject=subject, text=text, to=(address(contact, channel),), idempotency_key=effect.idempotency_key)


def _skipped(effect: LeadEffect, contact: Contact, channel: str, reason: str) -> dict:
    logger.info("message effect %s to contact %s on %s not sent: %s", effect.id, contact.id, channel, reason)
    return {"skipped": reason}


def deliver(runtime, effect: LeadEffect, contact: Contact, subject: str, text: str,
            now: datetime | None = None) -> dict:
    """Send the effect's message if consent, channel and cap allow; {"sent": channel} or {"skipped": reason}."""
    channel = effect.params.get("channel") or "email"
    if channel not in MESSAGE_CHANNELS:
        raise FatalError(f"unknown message channel {channel}", code="UNKNOWN_CHANNEL")
    reason = refusal(contact, channel)
    if reason:
        return _skipped(effect, contact, channel, reason)
    sender = message_channel(runtime, effect.workspace_id, channel)
    if sender is None:
        return _skipped(effect, contact, channel, "no_channel")
    if not caps.claim(runtime, effect.id, contact.id, channel, now or utcnow()):
        return _skipped(effect, contact, channel, "frequency_cap")
    sender.send(compose(contact, effect, channel, subject, text))
    logger.info("message effect %s to contact %s sent on %s", effect.id, contact.id, channel)
    return {"sent": channel}
