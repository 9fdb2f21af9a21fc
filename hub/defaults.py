"""Tunables, as named constants, in one place."""

MAX_BODY_BYTES = 1024 * 1024            # body over 1 MB -> 413
SIGNATURE_TOLERANCE_SECONDS = 300       # stale signed timestamps -> 401
SECRET_CACHE_SECONDS = 30               # how long verifiers reuse a decrypted secret
INGEST_WAIT_SECONDS = 20                # a delivery not committed by then answers 503 (vendor retries)
INGEST_STATEMENT_TIMEOUT_SECONDS = 10   # PostgreSQL statement_timeout of the ingest connection
INGEST_GROUP_MAX_EVENTS = 1000          # events written by one group-commit statement (PostgreSQL)

DEFAULT_PORT = 8000
DEFAULT_HUBSPOT_API_BASE = "https://api.hubapi.com"
DEFAULT_TWILIO_API_BASE = "https://api.twilio.com"     # an sms channel's `api_base` setting overrides it
DEFAULT_SALESFORCE_LOGIN_URL = "https://login.salesforce.com"
DEFAULT_HUBSPOT_AUTHORIZE_URL = "https://app.hubspot.com/oauth/authorize"
DEV_SECRET_KEY = "dev-only-secret-key"  # HUB_SECRET_KEY unset: well known, so no install link is signed with it
DEFAULT_HUBSPOT_RATE = "110/10s"
DEFAULT_HUBSPOT_SEARCH_RATE = "5/1s"
DEFAULT_SALESFORCE_API_RESERVE = 0.10

QUEUE_NAME = "hub"                      # events and CRM sync: the path from a change to the other CRM
RULES_QUEUE_NAME = "hub-rules"          # lead rules (evaluation, effects, decay, SLA): taken when the first is empty
BULK_QUEUE_NAME = "hub-bulk"            # backfilled records and mass replays: taken when both others are empty
QUEUE_NAMES = (QUEUE_NAME, RULES_QUEUE_NAME, BULK_QUEUE_NAME)   # workers listen in this order
BULK_SLICE_SECONDS = 0.1                # a bulk job hands its rest back after this when live or rules work waits
BULK_CHUNK_EVENTS = 5                   # ...looking between chunks of this many events
# Jobs waiting in a queue at which the relay leaves that queue's rows in the outbox. Low for bulk work,
# so a backfill waits in the outbox, not in Redis past its lease; low for rule evaluations, so while
# the live lane keeps the workers busy they wait in the outbox, one per contact however often it
# changes (hub.rules.schedule); high for live work: holding live rows back would merge them into
# fewer, larger jobs that fewer workers share (p95 +70 % in bench/sync).
QUEUE_HIGH_WATER = {QUEUE_NAME: 1000, RULES_QUEUE_NAME: 5, BULK_QUEUE_NAME: 10}
RELAY_BATCH_ROWS = 500                  # outbox rows read per relay pass
RELAY_EVENTS_PER_JOB = 200              # events handed to one RQ job
# ...and rows per job for a queue whose rows are not events: a rules job (~10 ms an evaluation) keeps a
# worker from live work for a tenth of a second at most
RELAY_ROWS_PER_JOB = {RULES_QUEUE_NAME: 10}
RELAY_IDLE_SECONDS = 0.1                # relay sleep when nothing is ready (each stage waits half of it on average; a pass costs ~2 ms CPU)
RELAY_REDIS_DOWN_SECONDS = 1.0          # relay back-off while Redis is unreachable
RELAY_MAX_BACKOFF_SECONDS = 30.0        # ...doubling per failed pass up to this
OUTBOX_LEASE_SECONDS = 120              # an enqueued row not done by then is enqueued again
OUTBOX_MAX_DELIVERIES = 20              # an event row handed out this often, never done: its events fail
JOB_TIMEOUT_SECONDS = 100                # below the lease, so a running job is never handed out twice

EVENT_MAX_ATTEMPTS = 5                  # then the event is 'failed' (see `hub replay --failed`)
EVENT_RETRY_BACKOFF_SECONDS = (2, 10, 60, 300)
IDENTITY_RESOLVE_ATTEMPTS = 3           # re-resolutions after a unique-key race (two workers, one person)

HTTP_TIMEOUT_SECONDS = 10               # every external call
CONNECT_CHECK_TIMEOUT_SECONDS = 5       # `hub connect`'s one-attempt check of the CRM's score fields
RETRY_MAX_ATTEMPTS = 4                  # bounded retries on 429/423/5xx
RETRY_MAX_WAIT_SECONDS = 30

PLACEHOLDER = "[not provided]"          # Salesforce Lead Company/LastName when blank

# OAuth install flows (hub/oauth.py, hub/oauth_apps.py)
OAUTH_TICKET_MAX_AGE_SECONDS = 3600     # an install link from `hub install-link` works this long
OAUTH_STATE_MAX_AGE_SECONDS = 600       # the vendor's consent screen must come back within this
OAUTH_NONCE_BYTES = 24                  # random bytes of the browser-bound nonce in `state`
OAUTH_VENDOR_ERROR_MAX_CHARS = 200      # a vendor's error text echoed back is cut to this
# HubSpot scopes: contacts and tasks (crm.objects.contacts.*), the score properties and their group
# (crm.schemas.contacts.*), owners (crm.objects.owners.read); `oauth` is required by HubSpot.
HUBSPOT_OAUTH_SCOPES = ("oauth", "crm.objects.contacts.read", "crm.objects.contacts.write",
                        "crm.schemas.contacts.read", "crm.schemas.contacts.write", "crm.objects.owners.read")
SALESFORCE_OAUTH_SCOPES = ("api", "refresh_token")

# CRM connectors (hub/connectors, hub/sync/tokens.py, hub/sync/ratelimit.py)
HUBSPOT_BATCH_SIZE = 100                # batch upsert/read inputs per call (HubSpot's limit)
HUBSPOT_SEARCH_PAGE_SIZE = 100          # search results per page (HubSpot max 200)
HUBSPOT_SEARCH_MAX_RESULTS = 10000      # HubSpot search pages no further than this; restart from the last time
HUBSPOT_DAILY_RETRY_SECONDS = 3600      # 429 policyName DAILY: try again no sooner than this
SALESFORCE_API_VERSION = "60.0"
SALESFORCE_BATCH_SIZE = 200             # sObject Collections records per call (Salesforce's limit)
SALESFORCE_LOOKUP_BATCH = 200           # emails per SOQL `Email IN (...)` lookup
SALESFORCE_CALL_CLIENT = "leadhub"      # Sforce-Call-Options client id (CDC changeOrigin shows it)
SALESFORCE_RESERVE_RETRY_SECONDS = 3600 # only the API reserve is left: try again no sooner than this
SALESFORCE_USAGE_TTL_SECONDS = 86400    # how long a seen Sforce-Limit-Info value is trusted
SALESFORCE_DESCRIBE_TTL_SECONDS = 3600  # how long an org's field list (describe) is reused
OWNER_DIRECTORY_TTL_SECONDS = 900      # how long a CRM's user directory (owner id <-> email) is reused
OWNER_DIRECTORY_REFRESH_SECONDS = 60   # an unknown owner id/email re-reads a directory older than this
OWNER_DIRECTORY_MAX_PAGES = 50         # pages read per directory listing (bounded; 100 owners a page)
HUBSPOT_OWNERS_PAGE_SIZE = 100         # owners per GET /crm/v3/owners page (HubSpot max 500)
CHANGES_LOOKBACK_SECONDS = 300          # polling cursors re-read this much behind the newest change
CHANGES_MAX_PAGES = 10                  # pages one read_changes call follows before returning
TOKEN_REFRESH_MARGIN_SECONDS = 300      # refresh an access token this long before it expires
TOKEN_LOCK_SECONDS = 30                 # Redis lock around a token refresh (held at most this long)
TOKEN_LOCK_WAIT_SECONDS = 35            # how long a worker waits for another one's refresh
RATE_LIMIT_MAX_WAIT_SECONDS = 30        # acquire() gives up (RetriableError) after this long
RATE_LIMIT_MARGIN_SECONDS = 0.1         # a spent token returns this much after its window, counted from the end of
                                        # its call (hub.sync.ratelimit); timed from the grant, 0.25 s still let a call
                                        # through a stalled machine to a 429 in bench/sync

# Lead rules (hub/rules)
RULES_DECAY_BATCH = 1000                # lead scores per transaction in the periodic decay pass
RULES_ACTIVITY_LOOKBACK_DAYS = 730      # activities older than this are not scored (decayed to ~0 anyway)
RULES_TOP_REASONS = 3                   # reasons written to the CRM with the score
RULES_EFFECT_MAX_ATTEMPTS = 5           # then a lead effect is 'failed' (logged, visible in lead_effect)
RULES_EFFECT_BACKOFF_SECONDS = (5, 30, 120, 600)
RULES_SLA_BATCH = 200                   # overdue assignments handled per SLA pass
RULES_DRY_RUN_BATCH = 1000              # contacts per chunk in `hub rules dry-run`
RULES_REASONS_MAX_CHARS = 250           # CRM text field limit for the reasons line
RULES_EFFECT_DELAY_SECONDS = 0.5        # effects wait this long after the sync push's coalescing window
RULES_DECAY_INTERVAL_SECONDS = 3600     # the periodic decay pass runs this often per workspace
RULES_SLA_INTERVAL_SECONDS = 300        # the SLA pass runs this often per workspace
RULES_SLA_DEFER_RETRY_HOURS = 72        # a reassigned lead's old task not yet Deferred is retried this long
MESSAGE_CAP_MAX = 3                     # messages to one contact per channel within MESSAGE_CAP_DAYS (hub notice cap)
MESSAGE_CAP_DAYS = 7
SMS_BODY_MAX_CHARS = 1600               # Twilio's limit for one message body

# Two-way CRM sync (hub/sync/push.py, engine.py, echo.py, backfill.py, polling.py)
SYNC_PUSH_COALESCE_SECONDS = 0.5        # a contact's edits within this window become one write
SYNC_PUSH_MAX_CONTACTS = 2000           # contacts one push round claims (HubSpot 20 batches, Salesforce 10)
SYNC_PUSH_MAX_ROUNDS = 20               # rounds one push job runs before handing over to a new job
SYNC_PUSH_LEASE_SECONDS = 300           # a claimed pending push not settled by then is claimed again
SYNC_PUSH_MAX_ATTEMPTS = 8              # then the push is given up (logged in sync_log)
SYNC_PUSH_BACKOFF_SECONDS = (2, 5, 15, 60, 300, 900, 3600)
ECHO_LEDGER_TTL_SECONDS = 3600          # how long a written value is recognised as the hub's echo
ECHO_CLOCK_SKEW_SECONDS = 5             # a vendor change stamped this much before the write can be its echo
SALESFORCE_DELETED_WINDOW_DAYS = 14     # Get Deleted answers for the last 15 days; a longer gap starts here
SALESFORCE_POLL_MIN_INTERVAL_SECONDS = 10  # shorter intervals are refused (each poll costs API calls)
BACKFILL_COMMIT_EVERY_PAGES = 1         # the backfill cursor is stored after this many pages
SYNC_ORDER_TOLERANCE_SECONDS = 1.0      # the hub's and the CRMs' clocks agree within this (ordering vs own writes)
BACKFILL_PREFETCH_PAGES = 2             # pages the backfill reads ahead while it stores the current one
