"""Topic-based Subscriptions (the Subscriptions R5 Backport IG on R4B): topics, subscriptions, notifications.

https://hl7.org/fhir/uv/subscriptions-backport/STU1.1/
"""
