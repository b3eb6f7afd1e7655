"""The dashboard: its JSON API, its page (static/, no build step) and the run counts it shows."""
