#!/usr/bin/env python3
"""What python makes of MessagePack payloads and JSON texts, for comparison
with banyan-core's python forms (tests/bus.rs).

Usage: py_forms.py MODE < lines

Each input line gives one output line, in the same order:

    dumps   line: hex of one MessagePack value, unpacked with
            msgpack.unpackb(raw=False, strict_map_key=False).
            out:  json.dumps(value), or "ERROR <exception type>".
    repr    line: as for dumps.
            out:  json.dumps([repr(value), str(value)]) (one line, whatever
                  the text holds), or "ERROR <exception type>".
    numpy   line: as for dumps, unpacked as python-banyan's numpy=True
            components unpack (msgpack_numpy's decode as object_hook).
            out:  as for repr.
    loads   line: a JSON string (json.dumps of the text to parse).
            out:  the hex of msgpack.packb(json.loads(text), use_bin_type=True),
                  or "ERROR <exception type>: <message>".

Output is flushed after each line.
"""

import json
import sys

import msgpack
import msgpack_numpy


def unpack(line):
    return msgpack.unpackb(bytes.fromhex(line), raw=False, strict_map_key=False)


def dumps(line):
    return json.dumps(unpack(line))


def reprs(line):
    value = unpack(line)
    return json.dumps([repr(value), str(value)])


def numpy_reprs(line):
    value = msgpack.unpackb(bytes.fromhex(line), object_hook=msgpack_numpy.decode)
    return json.dumps([repr(value), str(value)])


def loads(line):
    text = json.loads(line)
    return msgpack.packb(json.loads(text), use_bin_type=True).hex()


def main(mode):
    convert = {"dumps": dumps, "repr": reprs, "numpy": numpy_reprs, "loads": loads}[mode]
    for line in sys.stdin:
        line = line.rstrip("\n")
        try:
            out = convert(line)
        except Exception as error:
            detail = ": " + str(error) if isinstance(error, json.JSONDecodeError) else ""
            out = "ERROR " + type(error).__name__ + detail
        sys.stdout.write(out + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
