"""The SimPy driver (:mod:`.driver`) and the simulation-guided placement search
(:mod:`.search`)."""
