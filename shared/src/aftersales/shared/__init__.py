"""Shared library of the after-sales platform: the event contract and the plumbing every service uses."""
