"""Subscription delivery: the outbox written with each triggering write, and the worker that sends it."""
