"""Built-in plugin: the kinds of communication and their formal topics and outcomes.

A deployment extends the lists under ``[interactions.KIND]`` in ``crmkit.toml``;
plugins add kinds (or extend these) through ``crmkit_interaction_kinds``.
"""

from __future__ import annotations

from typing import Any

from crmkit import hookimpl

KINDS: list[dict[str, Any]] = [
    {
        "name": "call",
        "title": "Phone call",
        "direction_required": True,
        "topics": {
            "first_contact": "First contact",
            "qualification": "Qualification (BANT)",
            "presentation": "Presentation",
            "proposal_followup": "Follow-up on the proposal",
            "negotiation": "Negotiation",
            "payment_reminder": "Payment reminder",
            "service": "Service and support",
            "complaint": "Complaint",
        },
        "outcomes": {
            "no_answer": "No answer",
            "callback_requested": "Asked to call back",
            "not_interested": "Not interested",
            "interested": "Interested",
            "meeting_scheduled": "Meeting scheduled",
            "proposal_requested": "Asked for a commercial proposal",
            "agreed": "Agreed to the terms",
            "payment_promised": "Promised to pay",
            "resolved": "Question resolved",
        },
    },
    {
        "name": "meeting",
        "title": "Meeting",
        "topics": {
            "presentation": "Presentation",
            "needs_analysis": "Needs analysis",
            "negotiation": "Negotiation",
            "contract_signing": "Contract signing",
            "service": "Service",
        },
        "outcomes": {
            "needs_identified": "Needs identified",
            "proposal_requested": "Asked for a commercial proposal",
            "agreed": "Agreed to the terms",
            "contract_signed": "Contract signed",
            "postponed": "Postponed",
            "not_interested": "Not interested",
        },
    },
    {
        "name": "email",
        "title": "Email",
        "topics": {
            "first_contact": "First contact",
            "proposal": "Commercial proposal",
            "followup": "Follow-up",
            "invoice": "Invoice",
            "thank_you": "Thanks",
        },
        "outcomes": {
            "sent": "Sent",
            "replied": "Replied",
            "proposal_requested": "Asked for a commercial proposal",
            "agreed": "Agreed to the terms",
            "not_interested": "Not interested",
            "bounced": "Bounced",
        },
    },
    {
        "name": "letter",
        "title": "Letter",
        "topics": {
            "proposal": "Commercial proposal",
            "contract": "Contract",
            "invoice": "Invoice",
            "claim": "Claim",
        },
        "outcomes": {"sent": "Sent", "delivered": "Delivered", "returned": "Returned"},
    },
    {
        "name": "mailing",
        "title": "Mailing",
        "topics": {
            "newsletter": "Newsletter",
            "promotion": "Promotion",
            "announcement": "Announcement",
        },
        "outcomes": {
            "sent": "Sent",
            "opened": "Opened",
            "clicked": "Clicked",
            "lead": "Lead",
            "unsubscribed": "Unsubscribed",
        },
    },
    {
        "name": "campaign",
        "title": "Advertising campaign",
        "topics": {
            "advertising": "Advertising",
            "webinar_invite": "Webinar invitation",
            "promotion": "Promotion",
        },
        "outcomes": {"lead": "Lead", "no_response": "No response"},
    },
    {
        "name": "event",
        "title": "Event",
        "topics": {
            "exhibition": "Exhibition",
            "conference": "Conference",
            "webinar": "Webinar",
            "seminar": "Seminar",
        },
        "outcomes": {
            "attended": "Attended",
            "lead": "Lead",
            "meeting_scheduled": "Meeting scheduled",
            "no_show": "Did not come",
        },
    },
    {
        # a document made or signed: "moving between stages is fixed by a document"
        "name": "document",
        "title": "Document",
        "topics": {
            "proposal": "Commercial proposal",
            "contract": "Contract",
            "invoice": "Invoice",
            "presentation": "Presentation",
        },
        "outcomes": {
            "prepared": "Prepared",
            "sent": "Sent",
            "signed": "Signed",
            "rejected": "Rejected",
        },
    },
]


@hookimpl(trylast=True)
def crmkit_interaction_kinds() -> list[dict[str, Any]]:
    return KINDS
