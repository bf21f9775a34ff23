"""Secure aggregation with two non-colluding servers holding additive shares (Prio-style).

A hospital scales its data vector by its public weight, encodes it in fixed point over
the ring of integers modulo ``2**64`` (:mod:`medvec.secure.encoding`), draws a uniformly
random share B and sends ``A = encoded - B`` to the registry and ``B`` to the share
holder (:mod:`medvec.secure.shares`). Each server alone holds uniform noise. Only plain
sums over at least K hospitals are ever reconstructed, and the share holder refuses a
set that, with the sums it already released, would reveal anything about one hospital
alone (:mod:`medvec.secure.guard`).
"""

from medvec.lazy import lazy_attributes
from medvec.secure.encoding import FRAC_BITS, MODULUS_BITS, decode, encode, random_share, split
from medvec.secure.guard import check_query, exposed_members

#: names of :mod:`medvec.secure.shares`, which imports torch: loaded on first use, so that
#: the registry's upload path (encoding, guard) stays torch-free
_SHARES = {
    "SHARE_FORMAT": "medvec.secure.shares",
    "SHARE_KEY": "medvec.secure.shares",
    "SUM_FORMAT": "medvec.secure.shares",
    "ShareInfo": "medvec.secure.shares",
    "decode_sum_to_vector": "medvec.secure.shares",
    "read_share_info": "medvec.secure.shares",
    "sum_shares": "medvec.secure.shares",
    "validate_share": "medvec.secure.shares",
    "write_shares": "medvec.secure.shares",
}


__all__ = [
    "FRAC_BITS",
    "MODULUS_BITS",
    "SHARE_FORMAT",
    "SHARE_KEY",
    "SUM_FORMAT",
    "ShareInfo",
    "check_query",
    "decode",
    "decode_sum_to_vector",
    "encode",
    "exposed_members",
    "random_share",
    "read_share_info",
    "split",
    "sum_shares",
    "validate_share",
    "write_shares",
]

__getattr__, __dir__ = lazy_attributes(__name__, _SHARES, __all__)
