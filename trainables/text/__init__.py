"""Text VAEs and the dialog CVAE, plain PyTorch except the Tune adapters: vocabulary (``vocab``), corpora
(``data``: PTB/Yelp/toy sentences; ``dialog_data``: Switchboard dialogs), β schedules and ramps
(``beta_schedules``), posteriors (``posteriors``: Gaussian, semi-implicit), annealed training with aggressive
encoder steps (``vae_training``), metrics (``vae_metrics``, ``dialog_metrics``), the models (``vae_model``,
``dialog_model``) and their Ray Tune adapters (``vae_tune``, ``dialog_tune``). Imports nothing of
``trainables.image`` nor of the search code beyond ``search_space.registry``."""
