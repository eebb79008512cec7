#!/usr/bin/env python3
"""Prints what llama.cpp's own Python reader (the `gguf` package, gguf-py) sees in a GGUF file, as
JSON: every key with its type and value (arrays in full), every tensor with its type, ne, data
offset and the SHA-256 of its data. The tests compare this with gguftune's reader.

Usage: gguf_py_dump.py FILE.gguf
"""
import hashlib
import json
import sys

import gguf


def field_value(field):
    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.ARRAY:
            return "nested"
        return [field_part(field, i) for i in field.data]
    return field_part(field, field.data[0])


def field_part(field, index):
    part = field.parts[index]
    if field.types[-1] == gguf.GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    value = part.tolist()
    return value[0] if len(value) == 1 else value


def main():
    reader = gguf.GGUFReader(sys.argv[1])
    fields = []
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        fields.append({"key": name, "types": [int(t) for t in field.types], "value": field_value(field)})
    tensors = []
    for t in reader.tensors:
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "ne": [int(d) for d in t.shape],
            "offset": int(t.data_offset),
            "sha256": hashlib.sha256(t.data.tobytes()).hexdigest(),
        })
    json.dump({"fields": fields, "tensors": tensors}, sys.stdout)


main()
