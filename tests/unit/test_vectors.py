"""medvec.vectors: compute/apply, bit-exact file round trip, and every validation failure."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medvec.errors import IncompatibleBaseError, VectorValidationError
from medvec.hashing import sha256_file
from medvec.models import ModelSpec, list_models, register_model, save_model_file
from medvec.vectors import (
    HeaderTooLargeError,
    LazyTensorReader,
    MalformedFileError,
    NonFiniteError,
    NormBoundError,
    NotAVectorError,
    VectorDtypeError,
    VectorKeysError,
    VectorMetadata,
    VectorShapeError,
    apply_vector,
    compute_vector,
    load_vector,
    read_safetensors_header,
    read_vector_metadata,
    save_vector,
    validate_vector,
)

ARCH = "unit_vectors_tiny"


def _tiny(*, num_classes: int, in_channels: int = 3, image_size: int = 28) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3),
        nn.BatchNorm2d(4),
        nn.Flatten(),
        nn.Linear(4 * (image_size - 2) ** 2, num_classes),
    )


if ARCH not in list_models():
    register_model(ARCH)(_tiny)

SPEC = ModelSpec(arch=ARCH, num_classes=3, in_channels=1, image_size=8)


@pytest.fixture
def base_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = _tiny(num_classes=3, in_channels=1, image_size=8)
    model(torch.randn(2, 1, 8, 8))  # moves BatchNorm running stats and the step counter
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def base_path(tmp_path: Path, base_state: dict[str, torch.Tensor]) -> Path:
    return save_model_file(tmp_path / "base.safetensors", base_state, SPEC)


def _finetuned(base: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in base.items():
        if value.is_floating_point():
            out[key] = value + 0.01 * torch.randn(value.shape, generator=gen)
        else:
            out[key] = value + 5
    return out


def _metadata(base_path: Path, **overrides: object) -> VectorMetadata:
    sha = sha256_file(base_path)
    fields: dict[str, object] = {
        "base_id": sha,
        "base_sha256": sha,
        "hospital": "st-elsewhere",
        "num_samples": 120,
        "label_histogram": {"0": 70, "1": 30, "2": 20},
        "training": {"epochs": 2, "lr": 0.01},
        "privacy": {"dp_clip": 1.0},
        "spec": SPEC,
        "extra": {"site": "north"},
    }
    fields.update(overrides)
    return VectorMetadata.model_validate(fields)


@pytest.fixture
def vector_path(tmp_path: Path, base_path: Path, base_state: dict[str, torch.Tensor]) -> Path:
    vector = compute_vector(base_state, _finetuned(base_state))
    return save_vector(tmp_path / "v.safetensors", vector, _metadata(base_path))


# -- compute / apply -------------------------------------------------------


def test_compute_vector_skips_integer_buffers_and_apply_inverts_it(
    base_state: dict[str, torch.Tensor],
) -> None:
    tuned = _finetuned(base_state)
    vector = compute_vector(base_state, tuned)

    assert "1.num_batches_tracked" not in vector
    assert set(vector) == {k for k, v in base_state.items() if v.is_floating_point()}
    for key, delta in vector.items():
        assert torch.equal(delta, tuned[key] - base_state[key])

    restored = apply_vector(base_state, vector)
    for key, value in restored.items():
        expected = tuned[key] if key in vector else base_state[key]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)
    half = apply_vector(base_state, vector, scale=0.5)
    key = "3.weight"
    torch.testing.assert_close(half[key], base_state[key] + 0.5 * vector[key])


def test_compute_vector_refuses_another_architecture(base_state: dict[str, torch.Tensor]) -> None:
    other = dict(base_state)
    other["3.weight"] = torch.zeros(2, 2)
    with pytest.raises(VectorShapeError, match="3.weight"):
        compute_vector(base_state, other)
    del other["3.weight"]
    with pytest.raises(VectorKeysError, match="missing '3.weight'"):
        compute_vector(base_state, other)


# -- files -----------------------------------------------------------------


def test_round_trip_is_bit_exact_with_metadata(
    tmp_path: Path, base_path: Path, base_state: dict[str, torch.Tensor]
) -> None:
    vector = compute_vector(base_state, _finetuned(base_state))
    meta = _metadata(base_path)
    path = save_vector(tmp_path / "round.safetensors", vector, meta)

    tensors, loaded = load_vector(path)

    assert loaded == meta
    assert read_vector_metadata(path) == meta
    assert list(tensors) == list(vector)
    for key, value in vector.items():
        assert tensors[key].dtype == value.dtype
        assert torch.equal(tensors[key].view(torch.uint8), value.view(torch.uint8))
    # the safetensors library reads our files as well
    assert torch.equal(load_file(str(path))["3.weight"], vector["3.weight"])
    header = read_safetensors_header(path)
    assert header.metadata["medvec.format"] == "vector"
    assert json.loads(header.metadata["medvec.spec"])["arch"] == ARCH
    assert not list(tmp_path.glob(".*.tmp"))


def test_round_trip_keeps_half_precision_bits(tmp_path: Path, base_path: Path) -> None:
    tensors = {"w": torch.tensor([1.5, -0.0, 65504.0], dtype=torch.bfloat16)}
    path = save_vector(tmp_path / "bf16.safetensors", tensors, _metadata(base_path, spec=None))
    loaded, meta = load_vector(path)
    assert meta.spec is None
    assert torch.equal(loaded["w"].view(torch.int16), tensors["w"].view(torch.int16))


def test_lazy_reader_reads_one_tensor_or_a_slice(vector_path: Path) -> None:
    reference = load_file(str(vector_path))
    with LazyTensorReader(vector_path) as reader:
        for name in reader.keys():
            assert torch.equal(reader.read(name), reference[name])
        out = torch.empty(5, dtype=torch.float32)
        reader.read_into("3.weight", out, start=7)
        assert torch.equal(out, reference["3.weight"].reshape(-1)[7:12])
        with pytest.raises(ValueError, match="outside"):
            reader.read_into("3.weight", out, start=reference["3.weight"].numel() - 2)


# -- validation ------------------------------------------------------------


def test_valid_vector_reports_norm_and_counts(
    vector_path: Path, base_path: Path, base_state: dict[str, torch.Tensor]
) -> None:
    report = validate_vector(vector_path, base_path, max_norm=1e3)

    tensors, _ = load_vector(vector_path)
    expected = torch.sqrt(
        sum(
            ((t.double() ** 2).sum() for t in tensors.values()),
            torch.zeros((), dtype=torch.float64),
        )
    )
    assert report.num_tensors == len(tensors) == 8  # running stats are floating
    assert report.num_parameters == sum(t.numel() for t in tensors.values())
    assert report.l2_norm == pytest.approx(float(expected), rel=1e-12)
    assert report.metadata.hospital == "st-elsewhere"


def _write_raw(path: Path, header: dict[str, object], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _vector_header(base_path: Path) -> dict[str, str]:
    return {"medvec.format": "vector", "medvec.vector": _metadata(base_path).model_dump_json()}


def test_truncated_file_is_malformed(vector_path: Path, base_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(vector_path.read_bytes()[:-10])
    with pytest.raises(MalformedFileError, match="truncated") as info:
        validate_vector(cut, base_path)
    assert info.value.code == "vector_malformed"
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x02")
    with pytest.raises(MalformedFileError, match="too short"):
        validate_vector(tiny, base_path)


def test_garbage_header_is_malformed(base_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(MalformedFileError, match="not JSON"):
        validate_vector(path, base_path)


def test_deeply_nested_header_is_malformed(tmp_path: Path) -> None:
    depth = 100_000
    path = tmp_path / "nested.safetensors"
    path.write_bytes(struct.pack("<Q", 2 * depth) + b"[" * depth + b"]" * depth)
    with pytest.raises(MalformedFileError, match="nested too deeply"):
        read_safetensors_header(path)


def test_header_over_the_bound(vector_path: Path, base_path: Path, tmp_path: Path) -> None:
    size = read_safetensors_header(vector_path).header_bytes
    with pytest.raises(HeaderTooLargeError) as info:
        validate_vector(vector_path, base_path, max_header_bytes=size - 1)
    assert info.value.code == "vector_header_too_large"
    # a length field claiming far more than the file is refused before reading it
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(HeaderTooLargeError):
        validate_vector(huge, base_path)


def test_model_file_is_not_a_vector(base_path: Path) -> None:
    with pytest.raises(NotAVectorError, match="not a MedVec data vector") as info:
        validate_vector(base_path, base_path)
    assert info.value.code == "vector_wrong_format"


def test_bad_metadata_is_refused(base_path: Path, tmp_path: Path) -> None:
    header = _vector_header(base_path)
    header["medvec.vector"] = json.dumps({"hospital": "x"})
    path = tmp_path / "meta.safetensors"
    save_file({"a": torch.zeros(1)}, str(path), metadata=header)
    with pytest.raises(NotAVectorError, match="base_id"):
        validate_vector(path, base_path)


def _save_edited(
    tmp_path: Path, vector_path: Path, base_path: Path, edit: Mapping[str, torch.Tensor | None]
) -> Path:
    tensors = load_file(str(vector_path))
    for key, value in edit.items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata=_vector_header(base_path))
    return path


def test_missing_and_unexpected_keys(vector_path: Path, base_path: Path, tmp_path: Path) -> None:
    path = _save_edited(tmp_path, vector_path, base_path, {"1.bias": None})
    with pytest.raises(VectorKeysError, match="missing tensor '1.bias'") as info:
        validate_vector(path, base_path)
    assert info.value.code == "vector_keys_mismatch"
    path = _save_edited(tmp_path, vector_path, base_path, {"head.extra": torch.zeros(2)})
    with pytest.raises(VectorKeysError, match="unexpected tensor 'head.extra'"):
        validate_vector(path, base_path)
    integer_buffer = {"1.num_batches_tracked": torch.tensor(3)}
    path = _save_edited(tmp_path, vector_path, base_path, integer_buffer)
    with pytest.raises(VectorKeysError, match="num_batches_tracked"):
        validate_vector(path, base_path)


def test_wrong_shape_names_tensor_and_expected_shape(
    vector_path: Path, base_path: Path, tmp_path: Path
) -> None:
    path = _save_edited(tmp_path, vector_path, base_path, {"3.bias": torch.zeros(4)})
    with pytest.raises(VectorShapeError, match=r"'3.bias' has shape \[4\], expected \[3\]"):
        validate_vector(path, base_path)


def test_wrong_dtype(vector_path: Path, base_path: Path, tmp_path: Path) -> None:
    path = _save_edited(
        tmp_path, vector_path, base_path, {"3.bias": torch.zeros(3, dtype=torch.float16)}
    )
    with pytest.raises(VectorDtypeError, match="'3.bias' is F16, expected F32") as info:
        validate_vector(path, base_path)
    assert info.value.code == "vector_dtype_mismatch"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values(vector_path: Path, base_path: Path, tmp_path: Path, bad: float) -> None:
    path = _save_edited(tmp_path, vector_path, base_path, {"3.bias": torch.tensor([0.0, bad, 1.0])})
    with pytest.raises(NonFiniteError, match="'3.bias' holds 1 NaN or infinite") as info:
        validate_vector(path, base_path)
    assert info.value.code == "vector_non_finite"


def test_norm_over_the_bound(vector_path: Path, base_path: Path) -> None:
    norm = validate_vector(vector_path, base_path).l2_norm
    assert validate_vector(vector_path, base_path, max_norm=norm * 1.001).l2_norm == norm
    with pytest.raises(NormBoundError, match="exceeds the bound") as info:
        validate_vector(vector_path, base_path, max_norm=norm * 0.999)
    assert info.value.code == "vector_norm_exceeded"
    assert isinstance(info.value, VectorValidationError)


def test_vector_of_another_base(
    tmp_path: Path, vector_path: Path, base_state: dict[str, torch.Tensor]
) -> None:
    other_state = {k: v + 1 if v.is_floating_point() else v for k, v in base_state.items()}
    other_base = save_model_file(tmp_path / "other.safetensors", other_state, SPEC)
    with pytest.raises(IncompatibleBaseError, match="base sha256") as info:
        validate_vector(vector_path, other_base)
    assert info.value.code == "incompatible_base"


def test_base_must_be_a_model_file(vector_path: Path) -> None:
    with pytest.raises(NotAVectorError, match="cannot serve as a base"):
        validate_vector(vector_path, vector_path)


def test_layout_gaps_and_overlaps_are_malformed(base_path: Path, tmp_path: Path) -> None:
    header = {
        "__metadata__": _vector_header(base_path),
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = _write_raw(tmp_path / "overlap.safetensors", header, bytes(12))
    with pytest.raises(MalformedFileError, match="overlaps"):
        read_safetensors_header(path)
    header["b"] = {"dtype": "F32", "shape": [3], "data_offsets": [8, 16]}
    path = _write_raw(tmp_path / "size.safetensors", header, bytes(16))
    with pytest.raises(MalformedFileError, match="spans 8 bytes"):
        read_safetensors_header(path)


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("F64", torch.float64),
        ("F32", torch.float32),
        ("F16", torch.float16),
        ("BF16", torch.bfloat16),
        ("F8_E4M3", torch.float8_e4m3fn),
        ("F8_E5M2", torch.float8_e5m2),
    ],
)
def test_numpy_decoding_matches_torch_for_every_float_dtype(name: str, dtype: torch.dtype) -> None:
    """The registry decodes values without torch; every bit pattern must read as torch reads it
    (for the 8- and 16-bit formats all of them, specials included)."""
    from medvec.vectors.values import decode_floats

    if dtype.itemsize == 1:
        raw = torch.arange(256, dtype=torch.uint8)
    elif dtype.itemsize == 2:
        raw = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    else:
        raw = torch.randn(4096, dtype=dtype).view(torch.uint8)
        specials = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
        raw[: 3 * dtype.itemsize] = specials.view(torch.uint8)
    values = raw.view(dtype)
    expected = values.to(torch.float64).numpy()
    with np.errstate(invalid="ignore"):  # signalling NaN bit patterns
        got = decode_floats(name, raw.numpy().tobytes()).astype("float64")
    assert ((got == expected) | (np.isnan(got) & np.isnan(expected))).all()


def test_values_are_scanned_in_chunks_smaller_than_a_tensor(
    tmp_path: Path, base_path: Path, base_state: dict[str, torch.Tensor]
) -> None:
    """Chunked validation measures what a whole-tensor pass measures (and what torch
    measures), and counts every non-finite value of a tensor across its chunks."""
    base, meta = base_path, _metadata(base_path)
    tensors = compute_vector(base_state, _finetuned(base_state))
    good = save_vector(tmp_path / "good.safetensors", tensors, meta)
    whole = validate_vector(good, base)
    chunked = validate_vector(good, base, chunk_bytes=64)
    exact = sum(float(t.double().square().sum()) for t in tensors.values()) ** 0.5
    assert whole.l2_norm == pytest.approx(exact, rel=1e-12)
    assert whole.max_abs == max(float(t.abs().max()) for t in tensors.values())
    assert chunked.num_parameters == whole.num_parameters
    assert chunked.l2_norm == pytest.approx(whole.l2_norm, rel=1e-12)
    assert chunked.max_abs == whole.max_abs
    name = max(tensors, key=lambda k: tensors[k].numel())
    bad = dict(tensors)
    bad[name] = tensors[name].clone()
    bad[name].view(-1)[0] = float("nan")
    bad[name].view(-1)[-1] = float("inf")
    path = save_vector(tmp_path / "bad.safetensors", bad, meta)
    with pytest.raises(NonFiniteError) as info:
        validate_vector(path, base, chunk_bytes=64)
    assert info.value.detail["count"] == 2 and info.value.detail["tensor"] == name
