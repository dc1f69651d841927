"""Providers: the code that talks to a hypervisor directly."""
