"""``medvec demo``: the whole system on real data — registry, worker, hospitals, merges.

The registry and its worker run as a subprocess (``medvec-server``), so the hospital
CLI keeps needing only the client extra; everything else talks HTTP.
"""
