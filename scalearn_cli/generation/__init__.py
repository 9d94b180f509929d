"""Generation targets for decoder LMs: prompt -> answer data (``data``), the LM-head model (``model``) and scoring
by exact match or choice log-likelihood (``score``)."""
