"""The algorithms composed on Ray, as entry points: dcsod.py (dry run until issue 5), text_vae.py (issue 6)."""
