"""The shipped mutual-TLS mosquitto configuration (broker/mosquitto/, rendered by safesignal.pki.ca)
against a real mosquitto: who may connect, and who may write and read which topics.

A denied PUBLISH is dropped silently on MQTT 3.1.1 (mosquitto still sends PUBACK), so denials
are asserted on delivery: after the denied message the same client sends an allowed "control"
message, and the receiver's first message must be the control one.  mosquitto handles one
client's packets in order and queues deliveries to a subscriber in order, so a denied message
that had been let through would have arrived first.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SecretGuard
from safesignal.pki import ca as tenant_ca
from tlsutil import MtlsSite, TlsClient, plain_mqtt_connect, running_site

WAIT = 5.0  # seconds for anything that must happen


@pytest.fixture
def site(tmp_path: Path, guard: SecretGuard) -> Iterator[MtlsSite]:
    with running_site(tmp_path / "site", guard) as s:
        yield s


def first(c: TlsClient) -> tuple[str, bytes]:
    m = c.expect(WAIT)
    assert m is not None, "nothing was delivered"
    return m.topic, bytes(m.payload)


def only(c: TlsClient, topic: str, payload: bytes) -> None:
    """The next message ``c`` receives is exactly (topic, payload), and nothing else is queued."""
    assert first(c) == (topic, payload)
    assert c.received() == []


def operator(site: MtlsSite, name: str = "monitor") -> TlsClient:
    c = site.client(site.operator(name)).connect()
    assert [r.value for r in c.subscribe(f"safesignal/{site.tenant}/#")] == [1]
    return c


def device(site: MtlsSite, device_id: str, username: str | None = None) -> TlsClient:
    return site.client(site.device(device_id), device_id, username=username).connect()


def test_device_alert_and_status_reach_the_operator(site: MtlsSite) -> None:
    op = operator(site)
    d1 = device(site, "button-1")
    d1.publish(site.topic("button-1", "alert"), b'{"seq":0}')
    only(op, site.topic("button-1", "alert"), b'{"seq":0}')
    d1.publish(site.topic("button-1", "status"), b'{"online":true}', retain=True)
    only(op, site.topic("button-1", "status"), b'{"online":true}')
    # Another building and room: the ACL does not pin them (a moved device keeps its certificate).
    d1.publish(site.topic("button-1", "alert", "annex", "gym"), b"moved")
    only(op, site.topic("button-1", "alert", "annex", "gym"), b"moved")
    # A late operator gets the retained presence.
    late = operator(site, "night-desk")
    only(late, site.topic("button-1", "status"), b'{"online":true}')


def test_device_cannot_write_another_devices_topics(site: MtlsSite) -> None:
    op = operator(site)
    d1 = device(site, "button-1")
    denied = [
        site.topic("button-2", "alert"),  # another device's alert
        site.topic("button-2", "status"),  # ... and presence
        site.topic("button-1", "cmd"),  # commands come from operators only
        site.topic("button-1", "other"),  # not one of our kinds
        "safesignal/other-tenant/main/room-1/button-1/alert",  # another tenant
        "safesignal/acme/main/button-1/alert",  # wrong depth
        "elsewhere/button-1",
    ]
    for t in denied:
        d1.publish(t, b"spoof")
    d1.publish(site.topic("button-1", "alert"), b"control")
    only(op, site.topic("button-1", "alert"), b"control")


def test_identity_comes_from_the_certificate_not_the_client_id_or_username(site: MtlsSite) -> None:
    op = operator(site)
    # button-1's certificate, presenting button-2's client id and MQTT username.
    d1 = device(site, "button-1", username="button-2")
    d1.publish(site.topic("button-2", "alert"), b"spoof")
    d1.publish(site.topic("button-1", "alert"), b"control")
    only(op, site.topic("button-1", "alert"), b"control")
    assert "u'button-1'" in site.broker.log()  # mosquitto took the username from the CN


def test_a_certificate_cannot_take_over_another_devices_session(site: MtlsSite) -> None:
    """MQTT lets a new session with the same client id disconnect the old one.  The broker uses
    the certificate's CN as client id (use_username_as_clientid), so button-1's certificate
    presenting button-2's client id cannot knock button-2 offline."""
    op = operator(site)
    d2 = device(site, "button-2")
    attacker = site.client(site.device("button-1"), "button-2").connect()
    time.sleep(0.5)
    assert not d2.lost.is_set(), "button-2 was disconnected by another certificate"
    d2.publish(site.topic("button-2", "alert"), b"still here")
    only(op, site.topic("button-2", "alert"), b"still here")
    attacker.close()


def test_device_reads_only_its_own_cmd_topic(site: MtlsSite) -> None:
    op = operator(site)
    d1 = device(site, "button-1")
    d2 = device(site, "button-2")
    # mosquitto 2.0 grants every SUBSCRIBE; the ACL is applied to each message on delivery.
    for sub in (site.topic("button-2", "cmd"), f"safesignal/{site.tenant}/#", "#"):
        assert [r.value for r in d1.subscribe(sub)] == [1]
    assert [r.value for r in d2.subscribe(site.topic("button-2", "cmd"))] == [1]
    d2.publish(site.topic("button-2", "alert"), b"d2-alert")  # d1 may not read other devices' alerts
    assert first(op) == (site.topic("button-2", "alert"), b"d2-alert")
    op.publish(site.topic("button-2", "cmd"), b"for-2")
    op.publish(site.topic("button-1", "cmd"), b"for-1")
    only(d1, site.topic("button-1", "cmd"), b"for-1")
    only(d2, site.topic("button-2", "cmd"), b"for-2")  # delivered to the device it was for


def test_operator_reads_everything_writes_only_commands(site: MtlsSite) -> None:
    op = operator(site)
    watcher = operator(site, "watcher")
    d1 = device(site, "button-1")
    assert [r.value for r in d1.subscribe(site.topic("button-1", "cmd"))] == [1]
    op.publish(site.topic("button-1", "alert"), b"forged")  # an operator cannot fake an alert ...
    op.publish(site.topic("button-1", "status"), b"forged")  # ... or presence
    op.publish(site.topic("button-1", "cmd"), b"test-alert")  # ... but may send a command
    only(watcher, site.topic("button-1", "cmd"), b"test-alert")
    only(d1, site.topic("button-1", "cmd"), b"test-alert")
    assert op.received() == [(site.topic("button-1", "cmd"), b"test-alert")]
    # "pattern" lines apply to operators too, with %u = "op:monitor": it may write a topic whose
    # device level is its own username, which no receiver takes for a device (not a device id).
    odd = site.topic("op:monitor", "alert")
    op.publish(odd, b"pattern")
    only(watcher, odd, b"pattern")


def test_acl_changes_apply_on_sighup_to_connected_clients(site: MtlsSite) -> None:
    op = operator(site)
    d1 = device(site, "button-1")
    # A new operator certificate: valid, but not in the running broker's ACL yet.
    late_ident = site.operator("late", reload=False)
    assert "user op:late" in site.files.acl.read_text()
    late = site.client(late_ident).connect()
    late.subscribe(f"safesignal/{site.tenant}/#")
    d1.publish(site.topic("button-1", "alert"), b"before")
    assert first(op) == (site.topic("button-1", "alert"), b"before")
    op.publish(site.topic("op:late", "cmd"), b"control")  # the pattern lets op:late read this one
    only(late, site.topic("op:late", "cmd"), b"control")

    site.broker.reload()  # SIGHUP: the same connection now has the operator's grants
    d1.publish(site.topic("button-1", "alert"), b"after")
    only(late, site.topic("button-1", "alert"), b"after")

    # Removing an operator from the ACL takes its access away at the next SIGHUP.
    for suffix in (".pem", ".key"):
        (site.ca.operators_dir / f"late{suffix}").unlink()
    tenant_ca.write_acl(site.ca, site.files.dir)
    assert "op:late" not in site.files.acl.read_text()
    site.broker.reload()
    d1.publish(site.topic("button-1", "alert"), b"revoked")
    op.publish(site.topic("op:late", "cmd"), b"control-2")
    only(late, site.topic("op:late", "cmd"), b"control-2")


@pytest.mark.parametrize(("who", "logged"), [
    ("no certificate", "peer did not return a certificate"),
    ("another CA", "certificate verify failed"),
    ("expired", "certificate verify failed"),  # signed by the right CA: only its dates are wrong
])
def test_broker_refuses_clients_without_a_valid_certificate(site: MtlsSite, who: str, logged: str) -> None:
    if who == "no certificate":
        ident = site.anonymous()
    elif who == "another CA":
        ident = site.foreign_device("button-1")
    else:
        ident = site.expired_device("button-1")
    log_before = len(site.broker.log())
    start = time.monotonic()
    why = site.client(ident, "button-1").try_connect(WAIT)
    assert why is not None, f"a client with {who} was let in"
    assert time.monotonic() - start < WAIT
    # Same broker, same device id, a valid certificate: accepted (the refusal was the certificate).
    assert site.client(site.device("button-1"), "button-1").try_connect(WAIT) is None
    assert logged in site.broker.log()[log_before:]  # mosquitto's TLS layer refused it


def test_plain_tcp_is_refused(site: MtlsSite) -> None:
    reply = plain_mqtt_connect(site.host, site.port)
    assert not reply.startswith(b"\x20"), "the TLS port answered a plain MQTT CONNECT with a CONNACK"
    # No plain listener was opened either (mosquitto's default 1883 is off once a listener is set).
    with pytest.raises(OSError):
        socket.create_connection((site.host, 1883), 1.0).close()
