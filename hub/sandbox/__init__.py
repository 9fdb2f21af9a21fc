"""Sandbox CRMs: loopback fakes of the CRMs the hub talks to (HubSpot, Salesforce), in the vendors' documented formats.

Each fake is a small WSGI app holding records in memory; `serve(fake)` runs it on a free local port
in a thread. Tests, the sync simulation and `hub demo` point the connectors at `server.url`.
`hub/sandbox/validation.py` checks every captured request against the documented formats.
"""
