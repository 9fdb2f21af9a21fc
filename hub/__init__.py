"""lead hub: a self-hosted CRM integration hub (see DESIGN.md in the docs for the contract)."""

__version__ = "0.1.0"
