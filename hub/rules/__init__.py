"""Lead rules: scoring, grading, decay, MQL, segments, handoff and SLA.

How it fits together
- processing calls `schedule.schedule_evaluation` when a contact or its activities change; the
  worker runs `evaluation.evaluate_contact` (one transaction): score (`scoring`, with per-rule caps
  and a half-life decay), fit grade A-F (`grading`: BANT for B2B, RFM + duration for e-commerce),
  segments with hysteresis (`segments`, the MQL segment from `mql.MqlPolicy`), lifecycle stage
  (forward only), reasons; changed fields go to the CRMs through the sync push.
- entering/leaving a segment decides lead effects (`effects`): handoff (`handoff`: owner by account
  owner -> territory -> weighted round robin in `routing`, a CRM task, a notice), notice (Slack or
  email, else a log line: `notices`), crm_update, message.
- periodic jobs (`jobs.PERIODIC`): the batched decay pass (`decay`) and the SLA pass (`sla`:
  reassign or escalate when the owner has not acted).

Rule documents (`store`): one JSON document per workspace, validated with marshmallow, versioned;
expressions (`expressions`) are compiled once from a whitelisted subset of Python syntax (never
`eval`). Defaults: `presets.B2B` and `presets.ECOMMERCE` (`workspace.settings["rules_model"]`).
CLI: `hub rules test --contact ID`, `hub rules dry-run`, `hub rules save --file F --yes`,
`hub rules show`, `hub rules rep`, `hub rules recycle`, `hub rules preflight`.
Benchmark: `python bench/rules`.
"""
