"""Incoming vendors by source kind, registered by explicit import."""
from __future__ import annotations

from webhooks import hubspot
from webhooks import html_form, salesforce, shopify, standard, typeform, webflow, woocommerce

# kind -> module with verify(request, secret) and parse(body); form/shop kinds are added here.
SOURCE_RECEIVERS: dict = {
    "typeform": typeform,
    "webflow": webflow,
    "shopify": shopify,
    "woocommerce": woocommerce,
    "generic": standard,
    "html": html_form,
}

CRM_RECEIVERS = {"hubspot": hubspot, "salesforce": salesforce}
