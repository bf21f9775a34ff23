"""The share holder (``medvec-aggregator``): the second, non-colluding server of secure mode.

It holds share B of each hospital's (pre-scaled) vector, and answers the registry's
requests for plain sums of those shares over sets of at least K hospitals that would not,
together with the sums it already released, reveal anything about one hospital alone.
It has its own database, blob store, tokens and audit log, so that another party than
the registry's operator runs it.
"""
