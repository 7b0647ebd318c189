"""How one candidate is trained and scored (plain PyTorch core; Ray adapters on top). Not implemented yet (issue 3)."""
