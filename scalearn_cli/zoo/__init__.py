"""The zoo: a catalog of source-adapter recipes per base model (``catalog``, what ``zoo:TASK`` resolves through)
and the command that trains and pushes them (``build``)."""
