"""Server-zone workers.

head (authorise, route, enqueue), modelproxy (call providers, reply), accounting (usage
events to spend counters).
"""
