# The device identity for mutual TLS: a P-256 key pair made on the device, a certificate the
# tenant CA issued for it (CN = device id, clientAuth) and the tenant CA certificate.
#
# The private key is generated here (os.urandom), stored only in NVS (encrypted on the hardened
# board) and used only to sign the CSR and for TLS.  Nothing in this module prints or returns
# it in any form but the key blob the store keeps and the DER that mbedTLS loads.
#
# Key blob (ss_store.KEY_MAGIC): b"SSK\x01" + d (32 bytes, big-endian) + public point (65 bytes).

# Imported only when needed (provisioning an identity, an mqtts:// session, a status with a
# certificate): the EC and DER code costs about 25 kB of heap when loaded from .py or .mpy
# files, which a plain mqtt:// device in a 128 kB heap does not have to spare.  Frozen into
# the firmware image (firmware/boards/SAFESIGNAL_S3) it costs next to nothing.

import binascii
import hashlib

import ss_der
import ss_ec
import ssproto
from ss_store import KEY_LEN, KEY_MAGIC


def _mismatch(message):
    """The error for anything that does not fit (console status ERR IDENTITY)."""
    return ssproto.ProtocolError(ssproto.E_IDENTITY, message)


def new_key():
    """A fresh key blob."""
    d = ss_ec.generate_private_key()
    x, y = ss_ec.public_key(d)
    return KEY_MAGIC + d.to_bytes(32, "big") + ss_ec.encode_point(x, y)


def _split(key):
    if len(key) != KEY_LEN or key[:4] != KEY_MAGIC:
        raise _mismatch("device key has the wrong format")
    return int.from_bytes(key[4:36], "big"), key[36:]


def public_point(key):
    return _split(key)[1]


def csr(key, cn):
    """PKCS#10 request (DER) for CN=cn, signed with the key."""
    d, pub = _split(key)
    return ss_der.csr_der(d, pub, cn)


def key_der(key):
    """SEC1 ECPrivateKey DER for tls.SSLContext.load_cert_chain (RAM only)."""
    d, pub = _split(key)
    return ss_der.private_key_der(d, pub)


def cert_info(der):
    try:
        return ss_der.cert_info(der)
    except (ValueError, IndexError, TypeError):
        raise _mismatch("not a DER X.509 certificate this device can use")


def check(ident, device_id, tenant, verify_signature=True):
    """Check a complete identity {"key", "cert", "ca"} against the device id and tenant: the
    certificate is for this key, names this device (CN) and tenant (O), and the CA signed it
    (ECDSA P-256, about 0.3 s on the chip; skipped for an identity already checked at save).
    Returns the certificate's info.  ProtocolError (E_IDENTITY) says what does not fit."""
    info = cert_info(ident["cert"])
    if info["pub"] != public_point(ident["key"]):
        raise _mismatch("the certificate is not for this device's key (run provision_identity_csr again)")
    if info["cn"] != device_id:
        raise _mismatch("the certificate names device '%s', not '%s'" % (info["cn"], device_id))
    org = ss_der.name_cn(info["subject"], ss_der.OID_O)
    if org != tenant:
        raise _mismatch("the certificate is for tenant '%s', not '%s': the broker would drop every alert"
                            % (org, tenant))
    ca = cert_info(ident["ca"])
    if info["issuer"] != ca["subject"]:
        raise _mismatch("the certificate was not issued by this CA ('%s')" % ss_der.name_cn(ca["subject"]))
    if verify_signature:
        import gc

        ca_pub = ca["pub"]
        ca = None  # the CA's other fields are garbage from here on
        gc.collect()  # the verification needs room for its tables
        if not ss_der.cert_signed_by(info, ca_pub):
            raise _mismatch("the certificate's signature does not verify with this CA's key")
    return info


def describe(ident):
    """(certificate text, expiry, certificate SHA-256 hex) for provision_status; never the key."""
    if ident is None:
        return "none", "", ""
    digest = "".join(["%02x" % b for b in hashlib.sha256(ident["cert"]).digest()])
    try:
        info = cert_info(ident["cert"])
        ca = cert_info(ident["ca"])
    except ssproto.ProtocolError as e:
        return "unusable: " + e.message, "", digest
    return "CN=%s issued by %s" % (info["cn"], ca["cn"]), info["not_after"], digest


# --- the console commands (ss_console.Console delegates here) ---------------------------------

def _b64(data):
    return binascii.b2a_base64(data).decode().strip()


def _unb64(text, what):
    try:
        der = binascii.a2b_base64(text)
    except (ValueError, TypeError):
        raise ssproto.ProtocolError(ssproto.E_INVALID, what + " is not base64")
    if not der:
        raise ssproto.ProtocolError(ssproto.E_INVALID, what + " is empty")
    return der


def _expect(a, n, usage):
    if len(a) != n:
        raise ssproto.ProtocolError(ssproto.E_USAGE, usage)


async def cmd_csr(con, a):
    _expect(a, 0, "usage: provision_identity_csr")
    cfg = con.merged()
    if "device_id" not in cfg:
        raise ssproto.ProtocolError(ssproto.E_INCOMPLETE,
                                    "device not set: run provision_set_device first (the CSR names the device id)")
    con.info("[IDENTITY] Generating a P-256 key pair on the device...")
    if con.app is not None:
        con.app.radio_on()  # the ESP32's RNG is truly random only while the radio runs
    key = new_key()
    req = csr(key, cfg["device_id"])
    con.ident = {"key": key}
    import gc

    gc.collect()  # the EC arithmetic leaves a lot of garbage behind
    con.info("[IDENTITY] Key pair generated; the private key stays on this device")
    con._hint()
    con.ok("csr " + _b64(req))


async def cmd_set_cert(con, a):
    _expect(a, 1, "usage: provision_set_cert <base64 DER certificate>")
    if "key" not in con.ident:
        raise ssproto.ProtocolError(ssproto.E_STATE, "no key pair staged: run provision_identity_csr first")
    der = _unb64(a[0], "certificate")
    info = cert_info(der)
    if info["pub"] != public_point(con.ident["key"]):
        raise _mismatch("the certificate is not for the key made by the last provision_identity_csr")
    con.ident["cert"] = der
    con.info("Device certificate staged: CN=%s, valid until %s" % (info["cn"], info["not_after"]))
    con._hint()
    con.ok()


async def cmd_set_ca(con, a):
    _expect(a, 1, "usage: provision_set_ca <base64 DER certificate>")
    der = _unb64(a[0], "CA certificate")
    info = cert_info(der)
    con.ident["ca"] = der
    con.info("CA certificate staged: CN=%s, valid until %s" % (info["cn"], info["not_after"]))
    con._hint()
    con.ok()


def identity_for(con, cfg):
    if con.ident:
        for part, how in (("key", "provision_identity_csr"), ("cert", "provision_set_cert"),
                          ("ca", "provision_set_ca")):
            if part not in con.ident:
                raise ssproto.ProtocolError(ssproto.E_INCOMPLETE, "identity incomplete: run " + how)
        check(con.ident, cfg["device_id"], cfg["tenant"])
        return dict(con.ident)
    stored = con.store.identity()
    try:
        check(stored, cfg["device_id"], cfg["tenant"], False)
        return stored
    except ssproto.ProtocolError:
        return None
