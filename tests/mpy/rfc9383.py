# Reader of RFC 9383 Appendix C (tests/data/rfc9383-appendix-c-vectors.txt, the draft-08 text
# with its line wrapping), for MicroPython and CPython: vectors(path) -> {context: {name: value}}
# where value is bytes for hex values and the context/identities are bytes.


def _is_hex(s):
    if not s:
        return False
    for c in s:
        if c not in "0123456789abcdef":
            return False
    return True


def vectors(path):
    with open(path) as f:
        lines = [ln.strip() for ln in f.read().split("\n")]
    out = {}
    cur = None
    name = None
    i = 0
    while i < len(lines):
        ln = lines[i]
        i += 1
        if ln.startswith("[Context=b'"):
            text = ln[len("[Context=b'"):]
            while not text.endswith("']"):
                text += lines[i]
                i += 1
            cur = {"Context": text[:-2].encode()}
            out[cur["Context"]] = cur
            name = None
        elif cur is not None and ln.startswith("[id") and ln.endswith("']"):
            k, v = ln[1:-2].split("=b'")
            cur[k] = v.encode()
        elif cur is not None and " = 0x" in ln:
            name, v = ln.split(" = 0x")
            cur[name] = v
        elif cur is not None and name is not None and _is_hex(ln):
            cur[name] += ln
        else:
            name = None
    for block in out.values():
        for k in block:
            if isinstance(block[k], str):
                block[k] = bytes.fromhex(block[k])
    return out
