"""The two default rule sets a workspace can start from: B2B (BANT grade) and e-commerce (RFM grade).

Each is one tuple per rule kind; the numbers are chosen so the common cases are easy to reason
about: a VP at a 500-person company who requests a demo scores 55 (form 10 + demo 45) with fit
35 + 30 = 65, grade B, so they pass the MQL entry (score >= 50, grade A/B) at once, and they stay
an MQL until their score decays below 35 (half-life 30 days: about 19 days without activity).
"""
from __future__ import annotations

from hub.rules.grading import DEFAULT_BANDS, GradeRule
from hub.rules.mql import MqlPolicy
from hub.rules.ruleset import DecayPolicy, RuleSet, SlaPolicy
from hub.rules.scoring import ActivityRule, ProfileRule
from hub.rules.segments import Segment, Trigger

C_LEVEL = r"\b(ceo|cto|cfo|coo|cmo|cio|chief|vp|svp|evp|vice president|founder|co-founder|owner|president)\b"
DIRECTOR = r"\b(director|head of|head)\b"
MANAGER = r"\b(manager|lead|principal)\b"
JOB_SEEKER = ("student", "intern", "job seeker", "looking for", "unemployed", "graduate")

B2B_ACTIVITY_RULES = (
    ActivityRule("form_submit", "form_submit", 10, daily_cap=20, label="Form submitted"),
    ActivityRule("demo_form", "form_submit", 45, when='contains(form, "demo")', total_cap=90,
                 label="Demo request"),
    ActivityRule("demo_request", "demo_request", 55, total_cap=110, label="Demo requested"),
    ActivityRule("page_view", "page_view", 1, daily_cap=3, label="Page views"),
    ActivityRule("pricing_page", "page_view", 5, when='contains(url, "/pricing")', daily_cap=10,
                 label="Pricing page visits"),
    ActivityRule("email_open", "email_open", 1, daily_cap=2, label="Email opens"),
    ActivityRule("email_click", "email_click", 3, daily_cap=9, label="Email clicks"),
    ActivityRule("purchase", "purchase", 20, label="Purchase"),
    ActivityRule("unsubscribe", "unsubscribe", -20, total_cap=20, decays=False, label="Unsubscribed"),
    ActivityRule("careers_form", "form_submit", -40, when='contains_any(form, ("career", "job"))', total_cap=40,
                 decays=False, label="Job application form"),
)
B2B_PROFILE_RULES = (
    ProfileRule("competitor", -100, "email_domain in competitor_domains", label="Competitor domain"),
    ProfileRule("job_seeker_title", -30, f"contains_any(title, {JOB_SEEKER!r})", label="Job seeker"),
    ProfileRule("personal_email", -5, "free_email", label="Personal email address"),
)
B2B_GRADE_RULES = (
    # Budget, by company size
    GradeRule("size_1000", "budget", 35, "company_size >= 1000", "1000+ employees"),
    GradeRule("size_200", "budget", 30, "company_size >= 200", "200-999 employees"),
    GradeRule("size_50", "budget", 20, "company_size >= 50", "50-199 employees"),
    GradeRule("size_10", "budget", 10, "company_size >= 10", "10-49 employees"),
    # Authority, by title
    GradeRule("title_exec", "authority", 35, f"matches(title, {C_LEVEL!r})", "Executive title"),
    GradeRule("title_director", "authority", 25, f"matches(title, {DIRECTOR!r})", "Director title"),
    GradeRule("title_manager", "authority", 15, f"matches(title, {MANAGER!r})", "Manager title"),
    GradeRule("title_any", "authority", 5, "not blank(title)", "Other title"),
    # Need, by industry
    GradeRule("industry_target", "need", 15, "lower(industry) in target_industries", "Target industry"),
    GradeRule("industry_known", "need", 5, "not blank(industry)", "Other industry"),
    # Timing, from the form's timeline answer (custom attribute)
    GradeRule("timing_now", "timing", 15, 'lower(custom["timeline"]) in ("now", "this quarter", "0-3 months")',
              "Buying this quarter"),
    GradeRule("timing_later", "timing", 8, 'lower(custom["timeline"]) in ("this year", "3-6 months", "6-12 months")',
              "Buying this year"),
)
B2B_SEGMENTS = (
    Segment("hot", "score >= 80", exit_when="score < 65", triggers=(
        Trigger("enter", "notice", {"text": "Hot lead: score {score}, grade {grade}"}),)),
    Segment("nurture", "not mql and score < 20 and grade in ('A', 'B', 'C')"),
)
B2B = RuleSet(
    model="b2b",
    activity_rules=B2B_ACTIVITY_RULES,
    profile_rules=B2B_PROFILE_RULES,
    grade_rules=B2B_GRADE_RULES,
    grade_bands=DEFAULT_BANDS,
    segments=B2B_SEGMENTS,
    mql=MqlPolicy(enter_score=50, exit_score=35, enter_grades=("A", "B"), keep_grades=("A", "B", "C")),
    decay=DecayPolicy(half_life_days=30),
    sla=SlaPolicy(hours=24, action="reassign", max_reassignments=2),
    lists={"competitor_domains": (), "target_industries": ("software", "saas", "fintech", "information technology")},
)

ECOMMERCE_ACTIVITY_RULES = (
    ActivityRule("purchase", "purchase", 15, label="Purchase"),
    ActivityRule("add_to_cart", "add_to_cart", 5, daily_cap=10, label="Added to cart"),
    ActivityRule("page_view", "page_view", 1, daily_cap=3, label="Page views"),
    ActivityRule("email_open", "email_open", 1, daily_cap=2, label="Email opens"),
    ActivityRule("email_click", "email_click", 2, daily_cap=6, label="Email clicks"),
    ActivityRule("form_submit", "form_submit", 5, daily_cap=10, label="Form submitted"),
    ActivityRule("unsubscribe", "unsubscribe", -20, total_cap=20, decays=False, label="Unsubscribed"),
)
ECOMMERCE_PROFILE_RULES = (
    ProfileRule("competitor", -100, "email_domain in competitor_domains", label="Competitor domain"),
)
ECOMMERCE_GRADE_RULES = (
    GradeRule("recency_30", "recency", 30, "recency_days <= 30", "Bought in the last 30 days"),
    GradeRule("recency_90", "recency", 20, "recency_days <= 90", "Bought in the last 90 days"),
    GradeRule("recency_180", "recency", 10, "recency_days <= 180", "Bought in the last 180 days"),
    GradeRule("recency_365", "recency", 5, "recency_days <= 365", "Bought in the last year"),
    GradeRule("frequency_10", "frequency", 25, "purchases >= 10", "10+ orders"),
    GradeRule("frequency_5", "frequency", 20, "purchases >= 5", "5-9 orders"),
    GradeRule("frequency_2", "frequency", 10, "purchases >= 2", "2-4 orders"),
    GradeRule("frequency_1", "frequency", 5, "purchases >= 1", "1 order"),
    GradeRule("monetary_1000", "monetary", 25, "monetary >= 1000", "Spent 1000+"),
    GradeRule("monetary_500", "monetary", 20, "monetary >= 500", "Spent 500-999"),
    GradeRule("monetary_100", "monetary", 10, "monetary >= 100", "Spent 100-499"),
    GradeRule("monetary_any", "monetary", 5, "monetary > 0", "Spent under 100"),
    GradeRule("duration_365", "duration", 20, "tenure_days >= 365", "Customer for a year+"),
    GradeRule("duration_90", "duration", 10, "tenure_days >= 90", "Customer for 90+ days"),
    GradeRule("duration_new", "duration", 5, "tenure_days >= 0", "New customer"),
)
ECOMMERCE_SEGMENTS = (
    Segment("vip", "grade == 'A'", exit_when="grade not in ('A', 'B')"),
    Segment("at_risk", "purchases >= 2 and recency_days > 180"),
)
ECOMMERCE = RuleSet(
    model="ecommerce",
    activity_rules=ECOMMERCE_ACTIVITY_RULES,
    profile_rules=ECOMMERCE_PROFILE_RULES,
    grade_rules=ECOMMERCE_GRADE_RULES,
    grade_bands=DEFAULT_BANDS,
    segments=ECOMMERCE_SEGMENTS,
    mql=MqlPolicy(enter_score=50, exit_score=35, enter_grades=("A", "B"), keep_grades=("A", "B", "C")),
    decay=DecayPolicy(half_life_days=60),
    sla=SlaPolicy(hours=48, action="reassign", max_reassignments=1),
    lists={"competitor_domains": ()},
)

PRESETS = {"b2b": B2B, "ecommerce": ECOMMERCE}
