"""``safesignal nvs dump``: what an ESP-IDF NVS partition image holds, and whether it is intact.

Input: an NVS partition image (the virtual device's flash file, or a real device's partition read
with ``esptool.py read_flash 0x9000 0x6000 nvs.bin``), or a whole-flash dump: when the file holds an
ESP partition table (:mod:`.partition_table`), the data partition labelled ``--partition`` (default
``nvs``) is dumped.  Keys for an encrypted partition (ESP-IDF NVS encryption, see
:mod:`safesignal.nvs.format`): :mod:`.keyfiles`.  Without keys an encrypted image still shows its pages and
entry states, and says that its entries cannot be read.

Checks: page-header CRCs, item CRCs (after decryption), entry-state bitmaps, spans, string/blob
data CRCs, blob indexes against their chunks, duplicate keys, namespace references (all from
:func:`safesignal.nvs.format.parse_partition`), and the SafeSignal records, decoded with the firmware's own
codec (``ssproto.records``): the configuration records ``provision/cfg0|cfg1`` (SHA-256, and the one
``provision/active`` names) and the outbox entries ``outbox/qNN`` (SHA-256, first 8 bytes).

Masking (decided in one place, :func:`.masking.classify`; ``--show-secrets`` shows everything):

* ``provision/cfg0``, ``provision/cfg1``: configuration records ``b"SSC" + version + JSON +
  SHA-256``: decoded and shown with secret fields masked.  A record that does not decode is masked
  entirely (it may hold the WiFi password).
* ``provision/key0``, ``provision/key1``: the device's private key, masked entirely;
  ``provision/cert0|1`` and ``provision/ca0|1``: its certificate and the tenant CA certificate,
  public - shown as length and SHA-256, plus subject, issuer and expiry when they parse as X.509
  (DER or PEM).
* ``outbox/q00`` .. ``outbox/q99``: alert records ``b"SSQ" + version + JSON + SHA-256[:8]``: not
  secret, decoded and shown.
* anywhere else, a value whose namespace or key name contains ``pass``, ``pswd``, ``psk``,
  ``pmk``, ``secret``, ``key`` or ``token`` (case-insensitive) is masked: this covers ESP-IDF's own
  WiFi credentials (``nvs.net80211``: ``sta.pswd``, ``sta.pmk``, ``ap.passwd``, ``ap.pmk``).  The
  same rule masks fields of decoded JSON records, and the password of a URI's ``user:password@``.
* everything else is shown: integers, strings (text), blobs as hex truncated to
  :data:`.render.TEXT_HEX_BYTES` bytes in text output and :data:`.report.JSON_HEX_BYTES` in JSON.

A masked value is shown as ``********``; neither its hash nor (except for blobs) its length is shown.
No issue text contains a stored value.

Exit codes: 0 the partition is intact and every entry was read; 6 integrity problems were found,
or the entries could not be read (encrypted without a key, wrong key); 2 unusable input (file not
readable, not a whole number of 4 KiB pages, partition not found, bad key file).

Modules: :mod:`.partition_table`, :mod:`.keyfiles`, :mod:`.masking`, :mod:`.records` (decoding),
:mod:`.report` (the document), :mod:`.render` (text and JSON).  The command line is
:mod:`safesignal.cli.nvs`.
"""

from __future__ import annotations

from safesignal.nvs.dump.keyfiles import load_keys, read_file
from safesignal.nvs.dump.masking import MASK, classify
from safesignal.nvs.dump.partition_table import (
    FlashPartition,
    PartitionTable,
    find_partition_table,
    read_partition_table,
)
from safesignal.nvs.dump.render import render_json, render_text
from safesignal.nvs.dump.report import EXIT_CLEAN, EXIT_PROBLEMS, EXIT_UNUSABLE, DumpReport, build_report

__all__ = [
    "EXIT_CLEAN",
    "EXIT_PROBLEMS",
    "EXIT_UNUSABLE",
    "MASK",
    "DumpReport",
    "FlashPartition",
    "PartitionTable",
    "build_report",
    "classify",
    "find_partition_table",
    "load_keys",
    "read_file",
    "read_partition_table",
    "render_json",
    "render_text",
]
