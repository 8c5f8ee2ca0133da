"""Model weights in the safetensors format, read with numpy and torch alone.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw bytes (https://github.com/huggingface/safetensors, "Format"). Reading
it runs no code (unlike a pickled torch checkpoint), and this reader needs neither the ``safetensors``
package nor ``torch.frombuffer``, so a bundle's weights load in the 2022 runtime (torch 1.8, where
neither exists) exactly as they do here. Training writes the files with the ``safetensors`` package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

# safetensors dtype -> (numpy dtype of the stored bytes, torch dtype of the tensor)
DTYPES = {
    "F64": ("<f8", torch.float64), "F32": ("<f4", torch.float32), "F16": ("<f2", torch.float16),
    "BF16": ("<u2", torch.bfloat16), "I64": ("<i8", torch.int64), "I32": ("<i4", torch.int32),
    "I16": ("<i2", torch.int16), "I8": ("i1", torch.int8), "U8": ("u1", torch.uint8), "BOOL": ("?", torch.bool),
}
MAX_HEADER = 100_000_000  # the format's own limit on the header's size


class WeightsError(ValueError):
    """A weights file that is not a readable safetensors file; the message names the file and the tensor."""


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """name -> tensor (on the CPU) of a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    size = path.stat().st_size
    if size < 8:
        raise WeightsError(f"{path}: {size} bytes, too short for a safetensors file")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    n = int(raw[:8].view("<u8")[0])
    if n > MAX_HEADER or 8 + n > size:
        raise WeightsError(f"{path}: header length {n} does not fit the file's {size} bytes; not a safetensors file")
    try:
        header = json.loads(bytes(raw[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path}: the header is not JSON ({exc}); not a safetensors file") from exc
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: the header is not a JSON object")
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], [int(s) for s in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{path}: tensor {name!r} has a malformed entry {info!r}") from exc
        if dtype not in DTYPES:
            raise WeightsError(f"{path}: tensor {name!r} has dtype {dtype}, which this reader does not know "
                               f"(it knows {', '.join(DTYPES)})")
        np_dtype, torch_dtype = DTYPES[dtype]
        count = int(np.prod(shape)) if shape else 1
        if not 0 <= start <= end <= len(data) or end - start != count * np.dtype(np_dtype).itemsize:
            raise WeightsError(f"{path}: tensor {name!r} ({dtype} {shape}) has byte range {start}-{end}, which does not "
                               f"match its size or the file's {len(data)} data bytes; the file is damaged")
        array = np.array(data[start:end].view(np_dtype))  # a copy: the file can close
        if dtype == "BF16":  # numpy has no bfloat16: its bits are the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(array.reshape(shape)).to(torch_dtype)
    del raw
    return out
