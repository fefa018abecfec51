"""Processes assembled from several components (top layer, beside the CLI).

A component never imports another (DESIGN §2); when one process runs two of them, the assembly
lives here. The gateway is the edge plus the management API and admin web app.
"""
