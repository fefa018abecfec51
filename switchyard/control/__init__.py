"""The control plane in the server zone: the only writer of the live route table.

It validates route changes all-or-nothing, provisions the dispatch consumers new deployments
need, writes the table with compare-and-set, and reports deployment health (cooldowns, queue
depth). It answers only the admin identity, through the exported ``control.v1.admin.*``.
"""
