"""``medvec push VECTOR``: hash, upload resumably, and print the registry's verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.config import cache_dir
from hospital_cli.errors import EXIT_REJECTED, ApiError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client
from hospital_cli.uploads import PART_SIZE, ResumeStore, Uploader

app = typer.Typer()


@app.command()
def push(
    vector: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The .safetensors vector file.")
    ],
    part_size: Annotated[
        int, typer.Option("--part-size", min=1, help="Bytes per upload part.")
    ] = PART_SIZE,
    retries: Annotated[int, typer.Option(min=0, help="Retries per part on network errors.")] = 5,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Split into two additive shares: A to the registry, B to the share holder.",
        ),
    ] = False,
    share_holder: Annotated[
        str | None,
        typer.Option(envvar="MEDVEC_SHARE_HOLDER_URL", help="Share holder URL (--secure)."),
    ] = None,
    share_holder_token: Annotated[
        str | None,
        typer.Option(envvar="MEDVEC_SHARE_HOLDER_TOKEN", help="Your token at the share holder."),
    ] = None,
    dp_noise: Annotated[
        float | None,
        typer.Option(min=0.0, help="--secure: sigma of the sum's noise; you add sigma*C/sqrt(K)."),
    ] = None,
    dp_clip: Annotated[
        float | None, typer.Option(min=0.0, help="--secure --dp-noise: clip bound C.")
    ] = None,
    dp_k: Annotated[
        int, typer.Option(min=1, help="--secure --dp-noise: K, the share holder's minimum set.")
    ] = 3,
    dp_delta: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1e-5,
    max_norm: Annotated[
        float, typer.Option(help="--secure: the registry's norm bound (MEDVEC_MAX_VECTOR_NORM).")
    ] = 1.0e4,
    secure_weight: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="--secure: the public weight your shares are pre-scaled by (default: the "
            "vector's sample count; 1 with --dp-noise).",
        ),
    ] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push a data vector; an interrupted push resumes where it stopped.

    Pushing the same bytes again is harmless: the registry answers with the same vector.
    With --secure neither server ever holds the vector: see docs/secure-aggregation.md.

    Example: medvec push vectors/pneumonia-2026-11-23.safetensors
    """
    from medvec.hashing import sha256_file

    sha256 = sha256_file(vector)
    if secure:
        options = SecureOptions(
            share_holder, share_holder_token, dp_noise, dp_clip, dp_k, dp_delta, secure_weight
        )
        _push_secure(
            vector,
            sha256,
            options,
            max_norm,
            part_size,
            retries,
            make_client(profile, server, token),
            as_json,
        )
        return
    if dp_noise is not None or secure_weight is not None:
        raise typer.BadParameter(
            "--dp-noise and --secure-weight on push need --secure (else use `medvec train`)"
        )
    with make_client(profile, server, token) as client, output.progress_bytes() as bar:
        task = bar.add_task(f"push {vector.name}", total=vector.stat().st_size)
        uploader = Uploader(
            client,
            ResumeStore(cache_dir() / "uploads"),
            part_size=part_size,
            retries=retries,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        try:
            result = uploader.push(vector, sha256)
        except ApiError as exc:
            if exc.status == 422:
                bar.stop()
                _rejected(exc.message, exc.detail, as_json)
            raise
        bar.stop()
    record = result.vector  # validated or rejected when the upload completes
    status = str(record.get("status"))
    if as_json:
        output.print_json({**asdict(result), "vector": record})
    elif status == "rejected":
        pass
    else:
        where = "resumed at byte " + str(result.resumed_from) if result.resumed_from else "sent"
        known = " (already known: same bytes, same vector)" if result.already_known else ""
        output.success(
            f"vector {record.get('id')} {status}{known}; sha256 {sha256[:12]}…, "
            f"{result.bytes_sent} bytes {where}"
        )
    if status == "rejected":
        _rejected(str(record.get("reason") or record.get("status_reason") or ""), None, as_json)


def _rejected(reason: str, detail: Any, as_json: bool) -> None:
    if as_json:
        output.print_json({"status": "rejected", "reason": reason, "detail": detail})
    output.error(f"rejected by the registry: {reason}")
    raise typer.Exit(EXIT_REJECTED)


@dataclass(frozen=True)
class SecureOptions:
    share_holder: str | None
    share_holder_token: str | None
    dp_noise: float | None
    dp_clip: float | None
    dp_k: int
    dp_delta: float
    weight: int | None


def _push_secure(
    vector: Path,
    sha256: str,
    options: SecureOptions,
    max_norm: float,
    part_size: int,
    retries: int,
    client: RegistryClient,
    as_json: bool,
) -> None:
    from hospital_cli.secure import DistributedNoise, ShareHolderClient, prepare_shares, push_pair

    if not options.share_holder or not options.share_holder_token:
        raise typer.BadParameter(
            "--secure needs the share holder's URL and your token there "
            "(--share-holder / MEDVEC_SHARE_HOLDER_URL, --share-holder-token)"
        )
    noise = None
    if options.dp_noise is not None:
        if not options.dp_clip:
            raise typer.BadParameter("--dp-noise needs --dp-clip (the L2 bound C)")
        noise = DistributedNoise(options.dp_noise, options.dp_clip, options.dp_k, options.dp_delta)
    pair = prepare_shares(
        vector, sha256, cache_dir(), noise=noise, max_norm=max_norm, weight=options.weight
    )
    resume = ResumeStore(cache_dir() / "uploads")
    holder = ShareHolderClient(options.share_holder, options.share_holder_token)
    with client, holder, output.progress_bytes() as bar:
        task = bar.add_task(f"push --secure {vector.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def uploader(to: RegistryClient) -> Uploader:
            return Uploader(to, resume, part_size=part_size, retries=retries, on_progress=progress)

        try:
            result = push_pair(pair, uploader(holder), uploader(client))
        except ApiError as exc:
            if exc.status == 422:
                bar.stop()
                _rejected(exc.message, exc.detail, as_json)
            raise
    if as_json:
        output.print_json(result)
        return
    record = result["registry"]["vector"]
    output.success(
        f"share {record.get('id')} {record.get('status')} at the registry, share B held by "
        f"the share holder; pair {pair.pair_id[:12]}…, public weight {pair.weight}"
    )
