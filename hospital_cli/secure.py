"""``medvec push --secure``: split a vector into two additive shares and push one to each
server (share B to the share holder first, then share A to the registry).

The shares encode ``w * tau``, pre-scaled by the public weight ``w`` both record: the
vector's sample count (or ``--secure-weight``), and 1 with ``--dp-noise`` (the noise is
scaled with the vector, and the stated guarantee needs every hospital's part of it at
the same scale). The share holder then only ever sums shares plainly.

The shares are written once per (vector, privacy settings) into the cache and reused by
a re-run, so an interrupted secure push resumes both uploads with the same bytes and a
repeated one is idempotent: the same pair id, the same share records. (Splitting again
would make a new pair, and with ``--dp-noise`` release a second noisy copy.)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hospital_cli.client import RegistryClient
from hospital_cli.errors import CliError
from hospital_cli.uploads import PushResult, Uploader

DEFAULT_MAX_NORM = 1.0e4
"""The registry's default ``MEDVEC_MAX_VECTOR_NORM``: the overflow analysis assumes it."""


class ShareHolderClient(RegistryClient):
    """The share holder speaks the registry's upload protocol; its records are shares."""

    def get_vector(self, vector_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/shares/{vector_id}"))


@dataclass(frozen=True)
class DistributedNoise:
    noise_multiplier: float
    clip: float
    k: int
    delta: float


@dataclass(frozen=True)
class SharePair:
    share_a: Path
    share_b: Path
    pair_id: str
    privacy: dict[str, Any]
    weight: int


def _folder(cache: Path, vector_sha256: str, noise: DistributedNoise | None, weight: int) -> Path:
    settings = json.dumps(noise.__dict__ if noise else None, sort_keys=True)
    key = hashlib.sha256(f"{vector_sha256}:{settings}:w{weight}".encode()).hexdigest()[:32]
    return cache / "secure" / key


def public_weight(
    num_samples: int, noise: DistributedNoise | None, weight: int | None, max_norm: float
) -> int:
    """The weight the shares are pre-scaled by; refused when ``weight * max_norm`` cannot
    be encoded (the registry could then never sum the share without wrapping)."""
    from medvec.secure.encoding import max_total_weight

    if noise is not None and weight not in (None, 1):
        raise CliError(
            "--secure-weight other than 1 with --dp-noise would scale your part of the "
            "noise apart from the other hospitals' parts, and the guarantee with it",
            hint="leave --secure-weight out: noisy shares are pushed with weight 1",
        )
    chosen = 1 if noise is not None else (weight or num_samples)
    limit = max_total_weight(max_norm)
    if chosen > limit:
        raise CliError(
            f"the public weight {chosen} times the norm bound {max_norm:g} cannot be "
            f"encoded: at this bound a secure sum's weights may total at most {limit}",
            hint="push with a smaller --secure-weight, or the registry's operator lowers "
            "MEDVEC_MAX_VECTOR_NORM (then pass it as --max-norm)",
        )
    return chosen


def prepare_shares(
    vector: Path,
    vector_sha256: str,
    cache: Path,
    *,
    noise: DistributedNoise | None,
    max_norm: float,
    weight: int | None = None,
) -> SharePair:
    """The vector's shares from the cache, or freshly split (and noised) into it; ``weight``
    overrides the sample count as the public weight (see :func:`public_weight`)."""
    from medvec.vectors import read_vector_metadata

    chosen = public_weight(read_vector_metadata(vector).num_samples, noise, weight, max_norm)
    folder = _folder(cache, vector_sha256, noise, chosen)
    record = folder / "pair.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        pair = SharePair(folder / "share-a.safetensors", folder / "share-b.safetensors", **saved)
        if pair.share_a.is_file() and pair.share_b.is_file():
            return pair
    from medvec.privacy import l2_norm
    from medvec.secure.privacy import distributed_gaussian
    from medvec.secure.shares import write_shares
    from medvec.vectors import load_vector

    tensors, metadata = load_vector(vector)
    privacy = dict(metadata.privacy)
    if noise is not None:
        tensors, privacy = distributed_gaussian(
            tensors,
            noise_multiplier=noise.noise_multiplier,
            clip=noise.clip,
            k=noise.k,
            delta=noise.delta,
        )
        metadata = metadata.model_copy(update={"privacy": privacy})
    norm = l2_norm(tensors)
    if norm > max_norm:
        raise CliError(
            f"the vector's L2 norm {norm:.4g} is over the bound {max_norm:g} the secure "
            "encoding is sized for",
            hint="clip it (--dp-clip) or ask the registry's operator for its norm bound",
        )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair_id = secrets.token_hex(16)
    share_a, share_b = folder / "share-a.safetensors", folder / "share-b.safetensors"
    write_shares(tensors, metadata, share_a, share_b, pair_id=pair_id, weight=chosen)
    record.write_text(json.dumps({"pair_id": pair_id, "privacy": privacy, "weight": chosen}))
    return SharePair(share_a, share_b, pair_id, privacy, chosen)


def push_pair(pair: SharePair, to_holder: Uploader, to_registry: Uploader) -> dict[str, Any]:
    """Share B to the share holder, then share A to the registry (a merge can only name a
    share A whose B is already held)."""
    held: PushResult = to_holder.push(pair.share_b)
    accepted: PushResult = to_registry.push(pair.share_a)
    return {
        "pair_id": pair.pair_id,
        "weight": pair.weight,
        "privacy": pair.privacy,
        "share_holder": {"share": held.vector, "already_known": held.already_known},
        "registry": {"vector": accepted.vector, "already_known": accepted.already_known},
    }
