#!/usr/bin/env python3
"""Converts a PyTorch checkpoint (.pth/.pt) to safetensors without PyTorch.

Reads both formats torch.save writes: the zip archive (PyTorch >= 1.6) and
the legacy sequence of pickles (used by older checkpoints such as
efficientnet-lite0-57934424.pth). The unpickler is restricted: it resolves
only the globals that rebuild tensors (OrderedDict, torch's tensor and
parameter rebuilders and the typed storage classes) and refuses every other
global, so a checkpoint cannot run code.

Needs the Python standard library and numpy.

Usage: pth2safetensors.py CHECKPOINT OUTPUT.safetensors [--key state_dict] [--drop-int]
"""
import argparse
import collections
import io
import json
import pickle
import struct
import sys
import zipfile

import numpy as np

# Storage class -> (numpy dtype, safetensors dtype).
STORAGES = {
    "FloatStorage": (np.float32, "F32"), "DoubleStorage": (np.float64, "F64"),
    "HalfStorage": (np.float16, "F16"), "BFloat16Storage": (np.uint16, "BF16"),
    "LongStorage": (np.int64, "I64"), "IntStorage": (np.int32, "I32"), "ShortStorage": (np.int16, "I16"),
    "CharStorage": (np.int8, "I8"), "ByteStorage": (np.uint8, "U8"), "BoolStorage": (np.bool_, "BOOL"),
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class CheckpointError(Exception):
    pass


class StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype, self.st_dtype = STORAGES[name]


class Storage:
    """A flat buffer; `data` is filled once its bytes are read."""

    def __init__(self, storage_type, numel):
        self.type = storage_type
        self.numel = numel
        self.data = None


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self):
        base = self.storage.data
        if base is None:
            raise CheckpointError("a tensor refers to a storage whose data is missing")
        count = 1
        for s in self.size:
            count *= s
        if count == 0:
            return np.zeros(self.size, dtype=base.dtype)
        last = self.offset + sum((n - 1) * st for n, st in zip(self.size, self.stride))
        if self.offset < 0 or last >= base.size:
            raise CheckpointError(f"tensor of size {self.size} at offset {self.offset} runs past its storage of {base.size}")
        item = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(base[self.offset:], shape=self.size,
                                               strides=tuple(s * item for s in self.stride))
        return view.copy(order="C")  # (ascontiguousarray would turn a scalar into shape (1,))


def rebuild_tensor(storage, offset, size, stride, *unused):
    if not isinstance(storage, Storage):
        raise CheckpointError("tensor rebuilt from something that is not a storage")
    return Tensor(storage, offset, size, stride)


def rebuild_parameter(data, *unused):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages, load_storage):
        super().__init__(file)
        self.storages = storages
        self.load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        raise CheckpointError(f"refusing global {module}.{name}: only tensor data may be loaded")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(f"storage of unknown type {storage_type!r}")
        if key not in self.storages:
            self.storages[key] = Storage(storage_type, numel)
            self.load_storage(key, self.storages[key])
        return self.storages[key]


def load_zip(path):
    archive = zipfile.ZipFile(path)
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
        raise CheckpointError("zip checkpoint without exactly one data.pkl")
    prefix = pkl[0][: -len("data.pkl")]

    def load_storage(key, storage):
        raw = archive.read(f"{prefix}data/{key}")
        storage.data = np.frombuffer(raw, dtype=storage.type.dtype).copy()

    return RestrictedUnpickler(io.BytesIO(archive.read(pkl[0])), {}, load_storage).load()


def load_legacy(path):
    with open(path, "rb") as f:
        safe = lambda: RestrictedUnpickler(f, {}, lambda k, s: None).load()
        if safe() != LEGACY_MAGIC:
            raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
        safe()  # protocol version
        safe()  # system info
        storages = {}
        result = RestrictedUnpickler(f, storages, lambda k, s: None).load()
        keys = safe()
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise CheckpointError(f"storage {key} listed but never used")
            (count,) = struct.unpack("<q", f.read(8))
            raw = f.read(count * np.dtype(storage.type.dtype).itemsize)
            if len(raw) != count * np.dtype(storage.type.dtype).itemsize:
                raise CheckpointError(f"file truncated inside storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.type.dtype).copy()
        return result


def load(path):
    try:
        if zipfile.is_zipfile(path):
            return load_zip(path)
        return load_legacy(path)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise CheckpointError(f"malformed checkpoint: {e}") from e


def flatten(obj, prefix=""):
    """Yields (name, Tensor) for every tensor in nested dicts."""
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))


def write_safetensors(tensors, path, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        array, st_dtype = tensors[name]
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": st_dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in blobs:
            f.write(raw)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--key", help="take the tensors under this top-level key (e.g. state_dict)")
    p.add_argument("--drop-int", action="store_true", help="leave out integer tensors (num_batches_tracked)")
    args = p.parse_args()
    try:
        obj = load(args.checkpoint)
        if args.key:
            if not isinstance(obj, dict) or args.key not in obj:
                raise CheckpointError(f"no top-level key {args.key!r}")
            obj = obj[args.key]
        tensors = {}
        for name, t in flatten(obj):
            if args.drop_int and t.storage.type.st_dtype not in ("F32", "F64", "F16", "BF16"):
                continue
            tensors[name] = (t.array(), t.storage.type.st_dtype)
        if not tensors:
            raise CheckpointError("no tensors found")
    except (CheckpointError, OSError) as e:
        print(f"{args.checkpoint}: {e}", file=sys.stderr)
        return 2
    write_safetensors(tensors, args.output, {"source": args.checkpoint.split("/")[-1], "converter": "ops/weights/pth2safetensors.py"})
    print(f"wrote {len(tensors)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
