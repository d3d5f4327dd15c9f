# Minimal DER for the device identity: the private key for mbedTLS (SEC 1 ECPrivateKey,
# RFC 5915), the certificate signing request the host CA signs (PKCS#10, RFC 2986), and a
# small strict parser of the X.509 certificate it gets back (RFC 5280).  Bytes only, no PEM.
#
# The parser takes untrusted input: every length is checked against the enclosing element
# before anything is read, indefinite and non-minimal lengths are refused, and anything
# malformed raises ValueError with a short message (never IndexError or a hang: each step
# moves forward by at least one header).

import hashlib

import ss_ec
import ssproto

# Object identifiers, DER-encoded (tag 06, length, value).
# id-ecPublicKey 1.2.840.10045.2.1 and prime256v1 (secp256r1) 1.2.840.10045.3.1.7: RFC 5480 2.1.1
OID_EC_PUBLIC_KEY = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"
OID_PRIME256V1 = b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
# ecdsa-with-SHA256 1.2.840.10045.4.3.2: RFC 5758 3.2 (parameters absent)
OID_ECDSA_SHA256 = b"\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
# id-at-commonName 2.5.4.3: RFC 5280 appendix A.1 (X.520); ub-common-name = 64
OID_CN = b"\x06\x03\x55\x04\x03"
# id-at-organizationName 2.5.4.10 (RFC 5280 appendix A.1): the tenant, in SafeSignal certificates
OID_O = b"\x06\x03\x55\x04\x0a"
CN_MAX = 64

_SEQ = 0x30
_SET = 0x31


# ------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------

def tlv(tag, body):
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    if n < 0x100:
        return bytes([tag, 0x81, n]) + body
    if n < 0x10000:
        return bytes([tag, 0x82, n >> 8, n & 0xFF]) + body
    raise ValueError("DER: element too long")


def seq(*parts):
    return tlv(_SEQ, b"".join(parts))


def uint(v):
    """DER INTEGER of v >= 0."""
    if v < 0:
        raise ValueError("DER: negative INTEGER")
    n = 1
    while v >> (8 * n):
        n += 1
    b = v.to_bytes(n, "big")
    if b[0] & 0x80:
        b = b"\x00" + b
    return tlv(0x02, b)


def bit_string(b):
    return tlv(0x03, b"\x00" + b)  # no unused bits


def _pub_bytes(pub):
    # (x, y) or 65-byte point -> 65-byte point on the curve
    if isinstance(pub, tuple):
        return ss_ec.encode_point(*ss_ec.as_point(pub))
    ss_ec.decode_point(pub)
    return bytes(pub)


def name_der(cn):
    """X.501 Name with one RDN: CN=cn (UTF8String).  At most 64 characters (X.520's bound;
    note that `cryptography`'s NameAttribute refuses a CN over 64 UTF-8 *bytes*, so a CA that
    rebuilds the name with it needs ASCII for the longest ones)."""
    if not isinstance(cn, str) or not 0 < len(cn) <= CN_MAX:
        raise ValueError("CN must be 1..%d characters" % CN_MAX)
    if "\x00" in cn:
        raise ValueError("NUL in CN")
    return seq(tlv(_SET, seq(OID_CN, tlv(0x0C, cn.encode()))))


def spki_der(pub):
    """SubjectPublicKeyInfo of a P-256 key (RFC 5480): id-ecPublicKey, namedCurve prime256v1."""
    return seq(seq(OID_EC_PUBLIC_KEY, OID_PRIME256V1), bit_string(_pub_bytes(pub)))


def private_key_der(d, pub_point):
    """SEC 1 ECPrivateKey (RFC 5915 section 3): version 1, the 32-byte private key,
    [0] namedCurve prime256v1, [1] the public key.  What mbedTLS (load_cert_chain) and
    OpenSSL read as a "traditional" EC key."""
    if not 0 < d < ss_ec.N:
        raise ValueError("private key out of range")
    return seq(b"\x02\x01\x01", tlv(0x04, d.to_bytes(32, "big")), tlv(0xA0, OID_PRIME256V1),
               tlv(0xA1, bit_string(_pub_bytes(pub_point))))


def csr_der(d, pub_point, cn):
    """PKCS#10 CertificationRequest (RFC 2986) for subject CN=cn and the key (d, pub_point),
    signed ecdsa-with-SHA256.  pub_point must be d's public key (not recomputed here: that
    would cost a scalar multiplication); the CA's signature check would catch a mismatch."""
    info = seq(b"\x02\x01\x00", name_der(cn), spki_der(pub_point), b"\xa0\x00")  # v1, no attributes
    r, s = ss_ec.sign(d, hashlib.sha256(info).digest())
    return seq(info, seq(OID_ECDSA_SHA256), bit_string(ss_ec.sig_der(r, s)))


# ------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------

def _hdr(b, pos, end):
    """(tag, start, stop) of the element at b[pos:end]: its content is b[start:stop]."""
    if pos + 2 > end:
        raise ValueError("DER: truncated")
    tag = b[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("DER: high tag number")
    n = b[pos + 1]
    pos += 2
    if n & 0x80:
        cnt = n & 0x7F
        if not cnt:
            raise ValueError("DER: indefinite length")
        if cnt > 3 or pos + cnt > end:
            raise ValueError("DER: bad length")
        if not b[pos]:
            raise ValueError("DER: non-minimal length")
        n = 0
        for i in range(cnt):
            n = n << 8 | b[pos + i]
        pos += cnt
        if n < 0x80:
            raise ValueError("DER: non-minimal length")
    if n > end - pos:
        raise ValueError("DER: length exceeds buffer")
    return tag, pos, pos + n


def _get(b, pos, end, tag, what):
    t, s, e = _hdr(b, pos, end)
    if t != tag:
        raise ValueError("DER: %s: tag 0x%02x, want 0x%02x" % (what, t, tag))
    return s, e


def _uint_val(b, s, e, what):
    if s == e:
        raise ValueError("DER: empty INTEGER (%s)" % what)
    if b[s] & 0x80:
        raise ValueError("DER: negative %s" % what)
    if e - s > 1 and not b[s] and not b[s + 1] & 0x80:
        raise ValueError("DER: non-minimal INTEGER (%s)" % what)
    return int.from_bytes(b[s:e], "big")


def oid_str(b, s, e):
    """Dotted form of the OID whose content is b[s:e]."""
    if s == e:
        raise ValueError("DER: empty OID")
    arcs = []
    v = 0
    start = True
    for i in range(s, e):
        c = b[i]
        if start and c == 0x80:
            raise ValueError("DER: non-minimal OID arc")
        v = v << 7 | (c & 0x7F)
        start = not c & 0x80
        if start:
            if not arcs:
                first = 0 if v < 40 else (1 if v < 80 else 2)
                arcs.append(first)
                v -= 40 * first
            arcs.append(v)
            v = 0
    if not start:
        raise ValueError("DER: truncated OID")
    return ".".join([str(a) for a in arcs])


def _utf8(raw):
    # Strict UTF-8 (RFC 3629), identical on MicroPython and CPython: ssproto.decode_utf8
    # (its ProtocolError is a ValueError).
    return ssproto.decode_utf8(raw)


def _ucs(raw, width):
    # BMPString (UCS-2) or UniversalString (UCS-4), big-endian
    if len(raw) % width:
        raise ValueError("DER: bad string length")
    out = []
    for i in range(0, len(raw), width):
        v = int.from_bytes(raw[i:i + width], "big")
        if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
            raise ValueError("DER: bad character")
        out.append(chr(v))
    return "".join(out)


def _string(tag, raw):
    if tag == 0x0C:  # UTF8String
        s = _utf8(raw)
    elif tag in (0x13, 0x16):  # PrintableString, IA5String
        for c in raw:
            if c >= 0x80:
                raise ValueError("DER: non-ASCII character")
        s = raw.decode()
    elif tag == 0x14:  # TeletexString, read as Latin-1
        s = "".join([chr(c) for c in raw])
    elif tag == 0x1E:
        s = _ucs(raw, 2)
    elif tag == 0x1C:
        s = _ucs(raw, 4)
    else:
        raise ValueError("DER: unsupported string type 0x%02x" % tag)
    for ch in s:
        o = ord(ch)
        if (o < 0x20 and o != 0x09) or 0x7F <= o <= 0x9F:
            # C0 (but TAB), DEL, C1: a name is printed on the console, where a line break would
            # forge a status line and an escape would reach the installer's terminal.
            raise ValueError("DER: control character in a name")
    return s


def _name_cn(b, s, e, oid=OID_CN):
    # Name = SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue); content b[s:e]
    # The value of attribute ``oid`` (a DER OBJECT IDENTIFIER, default the CN), or None.
    cn = None
    while s < e:
        rs, re_ = _get(b, s, e, _SET, "RDN")
        if rs == re_:
            raise ValueError("DER: empty RDN")
        while rs < re_:
            a_s, a_e = _get(b, rs, re_, _SEQ, "attribute")
            o_s, o_e = _get(b, a_s, a_e, 0x06, "attribute type")
            t, v_s, v_e = _hdr(b, o_e, a_e)
            if v_e != a_e:
                raise ValueError("DER: trailing bytes in attribute")
            if b[o_s:o_e] == oid[2:]:
                cn = _string(t, b[v_s:v_e])  # the last one is the most specific
            else:
                oid_str(b, o_s, o_e)  # well-formed, at least
            rs = a_e
        s = re_
    return cn


def name_cn(name, oid=OID_CN):
    """The common name (str) in a DER Name (or the attribute ``oid``, e.g. OID_O), None if it
    has none; ValueError if malformed."""
    b = bytes(name)
    s, e = _get(b, 0, len(b), _SEQ, "Name")
    if e != len(b):
        raise ValueError("DER: trailing bytes after Name")
    return _name_cn(b, s, e, oid)


def _digits(t, i, n):
    v = 0
    for j in range(i, i + n):
        c = t[j]
        if not 0x30 <= c <= 0x39:
            raise ValueError("DER: bad time")
        v = v * 10 + c - 0x30
    return v


_MDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _time(b, pos, end):
    """(ISO 8601 UTC string, next pos) for the UTCTime or GeneralizedTime at b[pos:end]."""
    tag, s, e = _hdr(b, pos, end)
    t = b[s:e]
    if tag == 0x17 and len(t) == 13 and t[12] == 0x5A:  # YYMMDDHHMMSSZ
        y = _digits(t, 0, 2)
        y += 1900 if y >= 50 else 2000  # RFC 5280 4.1.2.5.1
        i = 2
    elif tag == 0x18 and len(t) == 15 and t[14] == 0x5A:  # YYYYMMDDHHMMSSZ
        y = _digits(t, 0, 4)
        i = 4
    else:
        raise ValueError("DER: bad time")
    mo = _digits(t, i, 2)
    dd = _digits(t, i + 2, 2)
    hh = _digits(t, i + 4, 2)
    mi = _digits(t, i + 6, 2)
    ss = _digits(t, i + 8, 2)
    if not (1 <= mo <= 12 and 1 <= dd <= _MDAYS[mo - 1] and hh < 24 and mi < 60 and ss < 60):
        raise ValueError("DER: bad time")
    if mo == 2 and dd == 29 and (y % 4 or (not y % 100 and y % 400)):
        raise ValueError("DER: bad time")
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, dd, hh, mi, ss), e


def _alg(b, pos, end):
    """(OID string, raw AlgorithmIdentifier, next pos)."""
    s, e = _get(b, pos, end, _SEQ, "AlgorithmIdentifier")
    o_s, o_e = _get(b, s, e, 0x06, "algorithm")
    if o_e != e and _hdr(b, o_e, e)[2] != e:  # parameters: one element, shape checked only
        raise ValueError("DER: trailing bytes in AlgorithmIdentifier")
    return oid_str(b, o_s, o_e), b[pos:e], e


def _bits(b, pos, end, what):
    s, e = _get(b, pos, end, 0x03, what)
    if s == e or b[s]:
        raise ValueError("DER: %s: unused bits" % what)
    return s + 1, e


def cert_info(der):
    """Fields of a DER X.509 certificate (RFC 5280) with a P-256 subject key:
      cn         subject common name (str, or None if the subject has none)
      subject    raw DER of the subject Name;  issuer  raw DER of the issuer Name
      pub        the subject's public key, 65-byte uncompressed point (on the curve)
      not_before, not_after   "YYYY-MM-DDTHH:MM:SSZ"
      serial     serial number, lower-case hex without leading zeros
      tbs        raw TBSCertificate (what the issuer signed)
      sig_alg    signature algorithm OID, dotted ("1.2.840.10045.4.3.2" = ECDSA with SHA-256)
      sig        (r, s) for an ECDSA signature, else None
    ValueError for anything malformed or not P-256."""
    b = bytes(der)
    end = len(b)
    cs, ce = _get(b, 0, end, _SEQ, "Certificate")
    if ce != end:
        raise ValueError("DER: trailing bytes after Certificate")
    ts, te = _get(b, cs, ce, _SEQ, "TBSCertificate")
    tbs = b[cs:te]
    sig_alg, alg_raw, pos = _alg(b, te, ce)
    vs, ve = _bits(b, pos, ce, "signatureValue")
    if ve != ce:
        raise ValueError("DER: trailing bytes in Certificate")
    sig = None
    if sig_alg.startswith("1.2.840.10045.4."):  # ecdsa-with-*
        sig = ss_ec.sig_from_der(b[vs:ve])

    # TBSCertificate
    pos = ts
    t, s, e = _hdr(b, pos, te)
    if t == 0xA0:  # [0] EXPLICIT version
        vs_, ve_ = _get(b, s, e, 0x02, "version")
        if ve_ != e or _uint_val(b, vs_, ve_, "version") > 2:
            raise ValueError("DER: bad version")
        pos = e
    s, e = _get(b, pos, te, 0x02, "serialNumber")
    serial = "%x" % _uint_val(b, s, e, "serial number")
    inner_alg, inner_raw, pos = _alg(b, e, te)
    if inner_raw != alg_raw:
        raise ValueError("DER: signature algorithms differ")
    s, e = _get(b, pos, te, _SEQ, "issuer")
    issuer = b[pos:e]
    _name_cn(b, s, e)
    vs_, ve_ = _get(b, e, te, _SEQ, "validity")
    not_before, p = _time(b, vs_, ve_)
    not_after, p = _time(b, p, ve_)
    if p != ve_:
        raise ValueError("DER: trailing bytes in validity")
    s, e = _get(b, ve_, te, _SEQ, "subject")
    subject = b[ve_:e]
    cn = _name_cn(b, s, e)
    ks, ke = _get(b, e, te, _SEQ, "subjectPublicKeyInfo")
    pos = ke
    a_s, a_e = _get(b, ks, ke, _SEQ, "key algorithm")
    if b[a_s:a_e] != OID_EC_PUBLIC_KEY + OID_PRIME256V1:
        raise ValueError("DER: key is not P-256")
    ps, pe = _bits(b, a_e, ke, "subjectPublicKey")
    if pe != ke:
        raise ValueError("DER: trailing bytes in subjectPublicKeyInfo")
    pub = b[ps:pe]
    ss_ec.decode_point(pub)
    last = 0
    while pos < te:  # issuerUniqueID [1], subjectUniqueID [2], extensions [3], in order
        t, s, e = _hdr(b, pos, te)
        num = {0x81: 1, 0x82: 2, 0xA3: 3}.get(t, 0)
        if num <= last:
            raise ValueError("DER: unexpected element in TBSCertificate")
        last = num
        pos = e
    return {
        "cn": cn,
        "subject": subject,
        "issuer": issuer,
        "pub": pub,
        "not_before": not_before,
        "not_after": not_after,
        "serial": serial,
        "tbs": tbs,
        "sig_alg": sig_alg,
        "sig": sig,
    }


def cert_signed_by(info, ca_pub):
    """True if the certificate (a cert_info() dict) carries a valid ECDSA-SHA256 signature
    by ca_pub ((x, y) or 65 bytes).  Checks the signature only: not dates, names or usage."""
    if info["sig_alg"] != ECDSA_SHA256 or info["sig"] is None:
        return False
    r, s = info["sig"]
    return ss_ec.verify(ca_pub, hashlib.sha256(info["tbs"]).digest(), r, s)
