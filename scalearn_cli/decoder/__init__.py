"""Decoder-LM targets (generation tasks): the causal LM with its frozen LM head as a task model (``model``) and
scoring by exact match or choice log-likelihood (``score``); their batches are ``data.generation``'s."""
