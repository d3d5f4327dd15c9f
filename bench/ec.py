"""Cost of the device's elliptic-curve code (firmware/esp32-button/lib/ss_ec.py, ss_der.py).

    .venv/bin/python bench/ec.py [--runs 30] [--heap 128k]

Method.  The same worker (this file) runs the firmware modules from source under two
interpreters: the MicroPython unix port (`.venv/bin/micropython -X heapsize=128k`, the
firmware's heap budget, MICROPYPATH=firmware/esp32-button/lib:.frozen) and CPython (this
process's interpreter, in a subprocess).  For each of `--runs` rounds it times, with
time.ticks_us (MicroPython) or time.perf_counter (CPython), after a gc.collect() outside the
timed region:
  keygen      ss_ec.generate_private_key() + ss_ec.public_key(d)   (os.urandom, one comb k*G)
  sign        ss_ec.sign(d, sha256(message))                       (RFC 6979 nonce, one comb k*G)
  verify      ss_ec.verify(pub, digest, r, s)                      (comb u1*G + wNAF u2*Q)
  csr         ss_der.csr_der(d, pub, cn)                           (sign + DER, key given)
  keygen_csr  keygen + csr: what the device does for provision_identity_csr
  ecdh        ss_ec.ecdh(d, peer)                                  (one wNAF multiplication)
  cert_check  ss_der.cert_info(cert) + ss_der.cert_signed_by(info, ca_pub)
(the certificate is a P-256 one made with `cryptography` on the host, passed in a file).
Every round uses a new key and message.  Medians in milliseconds.

Estimate for the device.  It assumes the clock a stock ESP32_GENERIC_S3 runs at: 160 MHz
(ESP-IDF's CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ default, which MicroPython's S3 board keeps; what
machine.freq() answers on the board and in the virtual device).  /work/shared/REFERENCE.md puts
an ESP32-S3 at 240 MHz roughly 40-60x slower than the unix port on this kind of machine for
pure-Python big-int code; at 160 MHz that is 240/160 = 1.5x more, 60-90x.  So the estimate is
the unix-port median times 60 (low end) and 90 (high end); the 240 MHz figures (x40, x60, for a
firmware that calls machine.freq(240000000)) are in the JSON too.  It is an estimate, not a
measurement on hardware.  Frozen or .mpy code runs the same bytecode, so it does not change
these figures.  Prints one JSON object.
"""

import sys

CLOCK_MHZ = 160  # stock ESP32_GENERIC_S3 (CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ=160)
_FACTOR_240_LO = 40  # REFERENCE.md: an ESP32-S3 at 240 MHz vs the unix port
_FACTOR_240_HI = 60
_FACTOR_LO = _FACTOR_240_LO * 240 // CLOCK_MHZ  # 60
_FACTOR_HI = _FACTOR_240_HI * 240 // CLOCK_MHZ  # 90
_OPS = ("keygen", "sign", "verify", "csr", "keygen_csr", "ecdh", "cert_check")


# --- the worker: runs under MicroPython and CPython ------------------------------------------

def _clock():
    import time

    if hasattr(time, "ticks_us"):
        return lambda: time.ticks_us(), lambda a, b: time.ticks_diff(a, b) / 1000
    return lambda: time.perf_counter(), lambda a, b: (a - b) * 1000


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def worker(runs, cert_path):
    import gc
    import hashlib

    import ss_der
    import ss_ec

    with open(cert_path, "rb") as f:
        blob = f.read()
    ca_pub, cert = blob[:65], blob[65:]
    now, ms = _clock()
    times = {}
    for op in _OPS:
        times[op] = []

    def timed(op, fn, *args):
        gc.collect()
        t0 = now()
        out = fn(*args)
        times[op].append(ms(now(), t0))
        return out

    def keygen():
        d = ss_ec.generate_private_key()
        return d, ss_ec.public_key(d)

    def keygen_csr(cn):
        d, pub = keygen()
        return ss_der.csr_der(d, pub, cn)

    def cert_check():
        return ss_der.cert_signed_by(ss_der.cert_info(cert), ca_pub)

    peer = ss_ec.public_key(ss_ec.generate_private_key())
    for i in range(runs):
        d, pub = timed("keygen", keygen)
        digest = hashlib.sha256(b"bench message %d" % i).digest()
        r, s = timed("sign", ss_ec.sign, d, digest)
        if not timed("verify", ss_ec.verify, pub, digest, r, s):
            raise SystemExit("verify failed")
        timed("csr", ss_der.csr_der, d, pub, "esp32-bench-" + str(i))
        timed("keygen_csr", keygen_csr, "esp32-bench-" + str(i))
        timed("ecdh", ss_ec.ecdh, d, peer)
        if not timed("cert_check", cert_check):
            raise SystemExit("certificate check failed")
    out = {}
    for op in _OPS:
        out[op] = round(_median(times[op]), 3)
    return out


# --- the host: CPython only ------------------------------------------------------------------

def _certificate(path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = ec.generate_private_key(ec.SECP256R1())
    dev = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esp32-bench-0000")]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench Tenant CA")]))
            .public_key(dev.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca, hashes.SHA256()))
    point = ca.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    path.write_bytes(point + cert.public_bytes(serialization.Encoding.DER))


def _run(argv, env, cwd):
    import json
    import os
    import subprocess

    p = subprocess.run(argv, env=dict(os.environ, **env), cwd=cwd, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{p.stdout}{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def host():
    import argparse
    import json
    import platform
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    lib = repo / "firmware" / "esp32-button" / "lib"
    ap = argparse.ArgumentParser(description="P-256 timings under MicroPython (unix) and CPython")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--heap", default="128k", help="MicroPython heap (-X heapsize); default: the firmware's budget")
    ap.add_argument("--micropython", default=str(Path(sys.executable).parent / "micropython"))
    args = ap.parse_args()
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory() as d:
        cert = Path(d) / "cert.bin"
        _certificate(cert)
        mpy = _run([args.micropython, "-X", f"heapsize={args.heap}", me, "--worker", str(args.runs), str(cert)],
                   {"MICROPYPATH": f"{lib}:.frozen"}, str(repo))
        cpy = _run([sys.executable, me, "--worker", str(args.runs), str(cert)],
                   {"PYTHONPATH": str(lib), "PYTHONDONTWRITEBYTECODE": "1"}, str(repo))
    def estimate(lo, hi):
        return {op: [round(mpy["median_ms"][op] * lo, 1), round(mpy["median_ms"][op] * hi, 1)] for op in _OPS}

    print(json.dumps({
        "benchmark": "p256",
        "runs": args.runs,
        "unit": "ms (medians)",
        "micropython_unix": {"version": mpy["version"], "heapsize": args.heap,
                             "median_ms": {op: mpy["median_ms"][op] for op in _OPS}},
        "cpython": {"version": cpy["version"], "median_ms": {op: cpy["median_ms"][op] for op in _OPS}},
        "esp32s3_clock_mhz": CLOCK_MHZ,
        "esp32s3_160mhz_estimate_ms": estimate(_FACTOR_LO, _FACTOR_HI),
        "esp32s3_slowdown_vs_unix_port": [_FACTOR_LO, _FACTOR_HI],
        "esp32s3_240mhz_estimate_ms": estimate(_FACTOR_240_LO, _FACTOR_240_HI),
        "estimate_basis": "unix-port median x 60 (low) and x 90 (high) at the stock 160 MHz clock: the 40-60x "
                          "REFERENCE.md gives for 240 MHz, x 240/160; not measured on hardware",
        "comb": {"width": 6, "columns": 43, "table_bytes": 63 * 64},
        "machine": platform.machine(),
    }, indent=2))
    return 0


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        res = worker(int(sys.argv[2]), sys.argv[3])
        impl = sys.implementation
        version = impl.name + " " + ".".join([str(v) for v in impl.version[:3]])
        import json

        print(json.dumps({"version": version, "median_ms": res}))
        return 0
    return host()


if __name__ == "__main__":
    sys.exit(main())
