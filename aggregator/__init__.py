"""The share holder (``medvec-aggregator``): the second, non-colluding server of secure mode.

It holds share B of each hospital's vector, and answers the registry's requests for
weighted sums of those shares over sets of at least K vectors that would not, together
with the sums it already released, isolate one vector. It has its own database, blob
store, tokens and audit log, so that another party than the registry's operator runs it.
"""
