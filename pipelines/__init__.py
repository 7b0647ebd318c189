"""The algorithms composed on Ray, as entry points (``dcsod.py``, ``text_vae.py``), over shared infrastructure:
``settings``, ``rundir``, ``ray_session``, ``journal``, ``mlflow_runs`` (see DESIGN.md, "Layers and layout")."""
