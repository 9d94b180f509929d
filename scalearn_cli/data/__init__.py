"""A task's data: rows from the Hub or local files (``rows``), labels (``labels``), the paper's splits
(``splits``), padded batches (``batches``; ``generation`` for decoder-LM targets) and the demo tasks (``demo``)."""
