"""Shared, atomic limits and spend in Redis/Valkey: key names, budget periods, Lua scripts.

The ingress checks a key's limits in one round trip (RPM and TPM token buckets, concurrent
requests, budget left) and the accounting worker adds spend, both through scripts here, so every
replica sees one count.
"""
