"""The virtual board's Bluetooth LE radio, and the virtual air it transmits on (bumble).

Three pieces:

- :class:`AirLink`, a bumble ``LocalLink`` with link-layer timing: once a central connects,
  every ACL and LL control PDU of that link reaches the other side at the next connection
  event (anchor + k * connInterval, the interval the central asked for in its CONNECT_IND), in
  the order it was sent; a controller that vanishes (a host that goes away, a chip that
  resets) leaves its peers connected until the supervision timeout, when they get a
  disconnection with reason 0x08 (connection timeout), as over a real radio.
- :class:`AirController`, bumble's emulated controller with what a scanner and the ESP32's
  legacy advertising need: ADV_IND / ADV_SCAN_IND / ADV_NONCONN_IND reports with the
  advertiser's own type, scan responses (its real scan response data, to active scanners
  only), connection only to connectable advertising, the peripheral told the central's
  connection interval, and the vendor command Write BD_ADDR (opcode 0xFC06, as Zephyr's
  controllers have it) so a sim that joins an air over TCP keeps its chip's address.
- :class:`AirServer`: the air reachable from other processes.  Every TCP connection to it is
  a new emulated controller on the air (plain HCI H4 over TCP): a host opens
  ``tcp-client:127.0.0.1:PORT`` with ``bumble.transport.open_transport`` and gets its own
  radio on the same air as the virtual buttons.

:class:`BleRadio` is the board's part (parts.py): a bumble peripheral whose GATT server is
what the firmware registered, answering the ``bluetooth`` stub's hardware ops.  The GATT
database (values, buffer sizes, append mode) lives in the stub, in the firmware's heap, as
NimBLE's ``gatts_db`` does (extmod/modbluetooth.c); remote reads and writes are events the
stub answers, and the ATT response leaves only once the firmware's IRQ handler has returned
(extmod/nimble/modbluetooth_nimble.c ``characteristic_access_cb`` calls the handler
synchronously).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bumble import att, hci, ll
from bumble.controller import Connection as LlConnection
from bumble.controller import Controller, LegacyAdvertiser
from bumble.core import PhysicalTransport
from bumble.device import AdvertisingType, Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service
from bumble.link import LocalLink
from bumble.profiles.gap import GenericAccessService
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, StreamPacketSink, StreamPacketSource, Transport

log = logging.getLogger(__name__)

WRITE_BD_ADDR = 0xFC06  # vendor HCI command (Zephyr's VS Write BD_ADDR): 6 bytes, little-endian address
CONNECTION_TIMEOUT = 0x08  # HCI error code: the supervision timeout expired
INVALID_PARAMETERS = 0x12  # HCI error code: Invalid HCI Command Parameters
REMOTE_USER_TERMINATED = 0x13  # BLE_ERR_REM_USER_CONN_TERM: what ble_gap_terminate sends
BT_MAC_OFFSET = 2  # esp_hw_support/mac_addr.c generate_mac: ESP_MAC_BT = base MAC, mac[5] += 2
# ports/esp32/boards/sdkconfig.ble CONFIG_BT_NIMBLE_SVC_GAP_DEVICE_NAME
DEFAULT_GAP_NAME = b"MPY ESP32"
GAP_NAME_MAX = 31  # ESP-IDF Kconfig BT_NIMBLE_GAP_DEVICE_NAME_MAX_LEN default
PREFERRED_MTU = 256  # ESP-IDF Kconfig BT_NIMBLE_ATT_PREFERRED_MTU default
MTU_MIN, MTU_MAX = 23, 527  # NimBLE ble_att_set_preferred_mtu: BLE_ATT_MTU_DFLT .. BLE_ATT_MTU_MAX
MAX_SERVICES = 8  # extmod/nimble/modbluetooth_nimble.h MP_BLUETOOTH_NIMBLE_MAX_SERVICES
MAX_CONNECTIONS = 4  # ports/esp32/boards/sdkconfig.ble CONFIG_BT_NIMBLE_MAX_CONNECTIONS
ADV_MAX = 31  # legacy advertising / scan response payload (NimBLE BLE_HS_ADV_MAX_SZ)
ADV_ITVL_MIN, ADV_ITVL_MAX = 0x20, 0x4000  # HCI LE Set Advertising Parameters, 0.625 ms units
ADV_IND, ADV_SCAN_IND, ADV_NONCONN_IND = 0, 2, 3
SCAN_RSP = 4
ATT_UNLIKELY = 0x0E  # ATT error: Unlikely Error

# IRQ event codes (extmod/modbluetooth.h MP_BLUETOOTH_IRQ_*)
IRQ_CENTRAL_CONNECT = 1
IRQ_CENTRAL_DISCONNECT = 2
IRQ_GATTS_WRITE = 3
IRQ_GATTS_READ_REQUEST = 4
IRQ_GATTS_INDICATE_DONE = 20
IRQ_MTU_EXCHANGED = 21

# extmod/modbluetooth.h MP_BLUETOOTH_CHARACTERISTIC_FLAG_* (the spec's property bits below 0x100)
FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
_PERMISSION_FLAGS = (
    (0x0200, Characteristic.Permissions.READ_REQUIRES_ENCRYPTION),
    (0x0400, Characteristic.Permissions.READ_REQUIRES_AUTHENTICATION),
    (0x0800, Characteristic.Permissions.READ_REQUIRES_AUTHORIZATION),
    (0x1000, Characteristic.Permissions.WRITE_REQUIRES_ENCRYPTION),
    (0x2000, Characteristic.Permissions.WRITE_REQUIRES_AUTHENTICATION),
    (0x4000, Characteristic.Permissions.WRITE_REQUIRES_AUTHORIZATION),
)


def ble_address(mac: bytes) -> bytes:
    """The chip's Bluetooth address (big-endian, as ``config('mac')`` gives it) from its base MAC."""
    return mac[:5] + bytes([(mac[5] + BT_MAC_OFFSET) & 0xFF])


def _key(a: hci.Address) -> bytes:
    return bytes(a.address_bytes)


# --- the air -----------------------------------------------------------------------------
class AirLink(LocalLink):
    """A LocalLink whose connections deliver at connection events (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # frozenset of both addresses -> (anchor, interval s, supervision timeout s)
        self.timing: dict[frozenset[bytes], tuple[float, float, float]] = {}
        self._queues: dict[tuple[bytes, bytes], collections.deque[tuple[float, Callable[[], None]]]] = {}
        self._armed: set[tuple[bytes, bytes]] = set()

    def send_advertising_pdu(self, sender_controller: Controller, packet: ll.AdvertisingPdu) -> None:
        if isinstance(packet, ll.ConnectInd):
            now = asyncio.get_running_loop().time()
            pair = frozenset((_key(packet.initiator_address), _key(packet.advertiser_address)))
            # the first connection event follows the CONNECT_IND by transmitWindowDelay (1.25 ms)
            self.timing[pair] = (now + 0.00125, packet.interval * 0.00125, packet.timeout * 0.01)
        super().send_advertising_pdu(sender_controller, packet)

    def next_event(self, a: bytes, b: bytes) -> float:
        """When a PDU sent now from ``a`` reaches ``b``: the next connection event of their link."""
        now = asyncio.get_running_loop().time()
        t = self.timing.get(frozenset((a, b)))
        if t is None:
            return now
        anchor, interval, _ = t
        if now < anchor:
            return anchor
        k = int((now - anchor) / interval) + 1
        return anchor + k * interval

    def _deliver(self, src: bytes, dst: bytes, action: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        when = self.next_event(src, dst)
        q = self._queues.setdefault((src, dst), collections.deque())
        if q and q[-1][0] > when:
            when = q[-1][0]  # never overtake what is already on its way
        q.append((when, action))
        if (src, dst) not in self._armed:
            self._armed.add((src, dst))
            loop.call_at(when, self._flush, src, dst)

    def _flush(self, src: bytes, dst: bytes) -> None:
        loop = asyncio.get_running_loop()
        q = self._queues.get((src, dst))
        self._armed.discard((src, dst))
        while q and q[0][0] <= loop.time() + 1e-6:
            _, action = q.popleft()
            try:
                action()
            except Exception:  # noqa: BLE001 - one bad PDU must not stop the air
                log.exception("air: delivery failed")
        if q:
            self._armed.add((src, dst))
            loop.call_at(q[0][0], self._flush, src, dst)

    def send_acl_data(self, sender_controller: Controller, destination_address: hci.Address,
                      transport: PhysicalTransport, data: bytes) -> None:
        if transport != PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        conn = sender_controller.le_connections.get(destination_address)
        source = conn.self_address if conn is not None else sender_controller.random_address
        dest = self.find_le_controller(destination_address)
        if dest is None:
            return

        def deliver() -> None:
            dest.on_link_acl_data(source, transport, data)

        self._deliver(_key(source), _key(destination_address), deliver)

    def send_ll_control_pdu(self, sender_address: hci.Address, receiver_address: hci.Address,
                            packet: ll.ControlPdu) -> None:
        receiver = self.find_le_controller(receiver_address)
        if receiver is None:
            return

        def deliver() -> None:
            receiver.on_ll_control_pdu(sender_address, packet)

        self._deliver(_key(sender_address), _key(receiver_address), deliver)

    def vanish(self, controller: Controller, remove: bool) -> None:
        """``controller`` stops transmitting (its host is gone, or its chip resets): each peer
        keeps its side of the link until the supervision timeout, then is told the connection
        timed out.  The controller's own host (if any) is told at once."""
        loop = asyncio.get_running_loop()
        for conn in list(controller.le_connections.values()):
            peer = self.find_le_controller(conn.peer_address)
            pair = frozenset((_key(conn.self_address), _key(conn.peer_address)))
            timeout = self.timing.pop(pair, (0.0, 0.0, 0.72))[2]
            peer_conn = peer.le_connections.get(conn.self_address) if peer is not None else None
            if peer is not None and peer_conn is not None:
                loop.call_later(timeout, _timed_out, peer, peer_conn)
            try:
                controller.on_le_disconnected(conn, CONNECTION_TIMEOUT)
            except KeyError:
                pass
        if remove and controller in self.controllers:
            self.remove_controller(controller)


def _timed_out(peer: Controller, conn: LlConnection) -> None:
    if peer.le_connections.get(conn.peer_address) is conn:
        peer.on_le_disconnected(conn, CONNECTION_TIMEOUT)


class _Advertiser(LegacyAdvertiser):
    """Legacy advertising as the ESP32's controller does it: every undirected type is on air
    (bumble's own sends ADV_IND only), at the interval the host set (0.625 ms units)."""

    def _on_timer_fired(self) -> None:
        self.send_advertising_data()
        interval = max(self.advertising_interval_min, ADV_ITVL_MIN) * 0.000625
        self.timer_handle = asyncio.get_running_loop().call_later(interval, self._on_timer_fired)

    def send_advertising_data(self) -> None:
        if self.enabled and self.advertising_type in (ADV_IND, ADV_SCAN_IND, ADV_NONCONN_IND):
            self.controller.send_advertising_pdu(ll.AdvInd(advertiser_address=self.address,
                                                           data=self.advertising_data))


# LE event mask bit of the LE Enhanced Connection Complete event (subevent 0x0A: bit 0x0A - 1),
# Bluetooth Core 5.4, Vol 4, Part E, 7.8.1 (HCI_LE_Set_Event_Mask)
ENHANCED_CONN_COMPLETE = 1 << 9


class AirController(Controller):
    """bumble's emulated controller, completed where a scan or the ESP32's legacy advertising
    needs it (see the module doc).  Legacy PDUs only: MicroPython's NimBLE binding advertises
    with ``ble_gap_adv_start``, the legacy procedure."""

    le_features = Controller.le_features & ~hci.LeFeatureMask.LE_EXTENDED_ADVERTISING

    def __init__(self, name: str, link: AirLink, public_address: hci.Address | None = None,
                 host_source: Any = None, host_sink: Any = None) -> None:
        super().__init__(name, host_source=host_source, host_sink=host_sink, link=link,
                         public_address=public_address)
        self.le_legacy_advertiser = _Advertiser(self)
        self._connect_ind: ll.ConnectInd | None = None

    def on_hci_command_packet(self, command: hci.HCI_Command) -> None:
        if command.op_code == WRITE_BD_ADDR:
            params = bytes(command.parameters)
            status = INVALID_PARAMETERS
            if len(params) == 6:
                self.public_address = hci.Address(params, hci.Address.PUBLIC_DEVICE_ADDRESS)
                status = hci.HCI_ErrorCode.SUCCESS
            self.send_hci_packet(hci.HCI_Command_Complete_Event(
                num_hci_command_packets=1, command_opcode=WRITE_BD_ADDR,
                return_parameters=hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode(status))))
            return
        super().on_hci_command_packet(command)

    def on_le_connect_ind(self, packet: ll.ConnectInd) -> None:
        self._connect_ind = packet
        try:
            super().on_le_connect_ind(packet)
        finally:
            self._connect_ind = None

    def send_hci_packet(self, packet: hci.HCI_Packet) -> None:
        ind = self._connect_ind
        if ind is not None and isinstance(packet, hci.HCI_LE_Connection_Complete_Event):
            # bumble reports a fixed 12.5 ms to the peripheral; the link runs at the central's
            packet = hci.HCI_LE_Connection_Complete_Event(
                status=packet.status, connection_handle=packet.connection_handle, role=packet.role,
                peer_address_type=packet.peer_address_type, peer_address=packet.peer_address,
                connection_interval=ind.interval, peripheral_latency=ind.latency,
                supervision_timeout=ind.timeout, central_clock_accuracy=packet.central_clock_accuracy)
        if isinstance(packet, hci.HCI_LE_Connection_Complete_Event) and self.le_event_mask & ENHANCED_CONN_COMPLETE:
            # A host that unmasked the enhanced event gets only that one (Bluetooth Core 5.4,
            # Vol 4, Part E, 7.7.65.10); bumble always sent the legacy event.  Linux unmasks it
            # when the controller has LL privacy, waits for it after LE Create Connection, and
            # on the legacy one gives up after its timeout (LE Create Connection Cancel) with
            # the link half known: it never disconnects it, so the button, still connected,
            # stopped advertising to that laptop (tests/test_ble_bluez.py).
            packet = hci.HCI_LE_Enhanced_Connection_Complete_Event(
                status=packet.status, connection_handle=packet.connection_handle, role=packet.role,
                peer_address_type=packet.peer_address_type, peer_address=packet.peer_address,
                local_resolvable_private_address=hci.Address.ANY, peer_resolvable_private_address=hci.Address.ANY,
                connection_interval=packet.connection_interval, peripheral_latency=packet.peripheral_latency,
                supervision_timeout=packet.supervision_timeout, central_clock_accuracy=packet.central_clock_accuracy)
        super().send_hci_packet(packet)

    def on_advertising_pdu(self, pdu: ll.AdvInd | ll.AdvExtInd) -> None:
        if isinstance(pdu, ll.AdvExtInd):
            super().on_advertising_pdu(pdu)
            return
        link = self.link
        source = link.find_le_controller(pdu.advertiser_address) if link is not None else None
        adv = source.le_legacy_advertiser if source is not None else None
        adv_type = adv.advertising_type if adv is not None else ADV_IND
        if self.le_scan_enable:
            reports = [hci.HCI_LE_Advertising_Report_Event.Report(
                event_type=adv_type, address_type=pdu.advertiser_address.address_type,
                address=pdu.advertiser_address, data=pdu.data, rssi=-50)]
            if self.le_scan_type == 1 and adv_type in (ADV_IND, ADV_SCAN_IND) and adv is not None:
                reports.append(hci.HCI_LE_Advertising_Report_Event.Report(
                    event_type=SCAN_RSP, address_type=pdu.advertiser_address.address_type,
                    address=pdu.advertiser_address, data=adv.scan_response_data, rssi=-50))
            for report in reports:
                self.send_hci_packet(hci.HCI_LE_Advertising_Report_Event([report]))
        pending = self.pending_le_connection
        if pending is not None and pending.peer_address == pdu.advertiser_address and adv_type == ADV_IND:
            self.create_le_connection(pdu.advertiser_address)


class _HostProtocol(StreamPacketSource):
    """One TCP client of the air: a new controller on it, HCI H4 both ways."""

    def __init__(self, air: AirServer) -> None:
        super().__init__()
        self.air = air
        self.controller: AirController | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        n = next(self.air.counter)
        self.controller = AirController(f"host{n}", self.air.link, host_source=self,
                                        host_sink=StreamPacketSink(transport))
        self.air.clients.add(transport)

    def data_received(self, data: bytes) -> None:
        try:
            super().data_received(data)
        except Exception:  # noqa: BLE001 - a host sending garbage loses its radio, not the air
            log.exception("air: bad HCI packet from a host; dropping it")
            if self.controller is not None and isinstance(self.controller.host, StreamPacketSink):
                self.controller.host.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.controller is not None:
            self.controller.host = None
            self.air.link.vanish(self.controller, remove=True)
            self.controller = None
        self.air.clients = {t for t in self.air.clients if not t.is_closing()}


class AirServer:
    """The air, reachable over loopback TCP: each connection is one more radio on it."""

    def __init__(self, link: AirLink) -> None:
        self.link = link
        self.counter = itertools.count(1)
        self.clients: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _HostProtocol(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def spec(self) -> str:
        return f"tcp-client:127.0.0.1:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self.clients):
            t.close()
        self.clients.clear()


# --- the board's radio ---------------------------------------------------------------------
def _properties(flags: int) -> Characteristic.Properties:
    return Characteristic.Properties(flags & 0x7F)


def _permissions(flags: int) -> Characteristic.Permissions:
    perm = Characteristic.Permissions(0)
    if flags & FLAG_READ:
        perm |= Characteristic.Permissions.READABLE
    if flags & (FLAG_WRITE | FLAG_WRITE_NO_RESPONSE):
        perm |= Characteristic.Permissions.WRITEABLE
    for bit, p in _PERMISSION_FLAGS:
        if flags & bit:
            perm |= p
    return perm


class BleRadio:
    """The chip's BLE controller and NimBLE host as the ``bluetooth`` stub sees them."""

    def __init__(self, mac: bytes, air_spec: str | None, serve: bool = True) -> None:
        self.address = ble_address(mac)
        self.serve = serve  # host our air for others (--ble); else nothing can reach it
        self.air_spec = air_spec  # join this air (a bumble transport spec); None: host our own
        self.link: AirLink | None = None
        self.server: AirServer | None = None
        self.transport: Transport | None = None
        self.controller: AirController | None = None
        self.device: Device | None = None
        self.spec = ""
        self.active = False
        self.gap_name = DEFAULT_GAP_NAME
        self.mtu = PREFERRED_MTU
        self.connections: dict[int, Connection] = {}
        self.attrs: dict[int, Characteristic[Any] | Descriptor] = {}
        self.advertising = False
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self.stats = {"connections": 0, "writes": 0, "notifications": 0, "adv_starts": 0}

    # --- lifecycle (the supervisor's) ------------------------------------------------------
    async def start(self) -> None:
        addr = hci.Address(self.address[::-1], hci.Address.PUBLIC_DEVICE_ADDRESS)
        if self.air_spec is None:
            self.link = AirLink()
            if self.serve:
                self.server = AirServer(self.link)
                await self.server.start()
                self.spec = self.server.spec
            self.controller = AirController("device", self.link, public_address=addr)
            device = Device.with_hci("safesignal", addr, self.controller, AsyncPipeSink(self.controller))
        else:
            self.spec = self.air_spec
            self.transport = await open_transport(self.air_spec)
            device = Device.with_hci("safesignal", addr, self.transport.source, self.transport.sink)
        self.device = device
        await device.power_on()
        if self.air_spec is not None:
            try:
                host: Any = device.host  # a vendor command: no typed overload
                await host.send_command(hci.HCI_Command(bytes(self.address[::-1]), op_code=WRITE_BD_ADDR),
                                        check_result=True)
                device.public_address = addr
            except Exception as e:  # noqa: BLE001 - a controller without the vendor command
                log.warning("BLE air %s: cannot set the chip's address (%s); using the controller's %s",
                            self.air_spec, e, device.public_address)
                self.address = bytes(device.public_address.address_bytes[::-1])
        device.on("connection", self._on_connection)
        self._rebuild([])

    async def close(self) -> None:
        await self.power_off()
        if self.transport is not None:
            await self.transport.close()
            self.transport = None
        if self.server is not None:
            self.server.close()
            self.server = None

    async def power_off(self) -> None:
        """A reset or power cut: the radio stops at once; peers see the supervision timeout."""
        self.active = False
        self._drop_events()
        if self.device is None:
            return
        if self.advertising:
            self.advertising = False
            try:
                await self.device.stop_advertising()
            except Exception:  # noqa: BLE001
                log.exception("BLE: stop advertising")
        if self.controller is not None and self.link is not None:
            self.link.vanish(self.controller, remove=False)
        else:
            for conn in list(self.connections.values()):
                try:
                    await conn.disconnect(CONNECTION_TIMEOUT)
                except Exception:  # noqa: BLE001
                    pass
        self.connections.clear()
        self.gap_name = DEFAULT_GAP_NAME
        self.mtu = PREFERRED_MTU
        self._rebuild([])

    def _drop_events(self) -> None:
        # A new queue, not an emptied one: the previous interpreter's long-poll (_hw_event) may
        # still be waiting on the old queue, and it would take the next boot's first event (a
        # connection) to a process that is gone.  It waits there for good instead.
        self.events = asyncio.Queue()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    # --- events to the stub -----------------------------------------------------------------
    def _post(self, ev: dict[str, Any], wait: bool = False) -> asyncio.Future[Any] | None:
        if not self.active:
            return None
        ev["id"] = next(self._ids)
        fut: asyncio.Future[Any] | None = None
        if wait:
            fut = asyncio.get_running_loop().create_future()
            self._pending[ev["id"]] = fut
        self.events.put_nowait(ev)
        return fut

    def _on_connection(self, conn: Connection) -> None:
        if not self.active or len(self.connections) >= MAX_CONNECTIONS:
            asyncio.ensure_future(conn.disconnect(REMOTE_USER_TERMINATED))
            return
        self.advertising = False  # undirected advertising ends with the connection
        self.connections[conn.handle] = conn
        self.stats["connections"] += 1
        peer = conn.peer_address
        addr = bytes(peer.address_bytes[::-1]).hex()
        at = 0 if peer.is_public else 1
        self._post({"ev": IRQ_CENTRAL_CONNECT, "conn": conn.handle, "at": at, "addr": addr})

        def on_disconnection(reason: int) -> None:
            if self.connections.get(conn.handle) is conn:
                del self.connections[conn.handle]
                self._post({"ev": IRQ_CENTRAL_DISCONNECT, "conn": conn.handle, "at": at, "addr": addr})

        def on_mtu() -> None:
            self._post({"ev": IRQ_MTU_EXCHANGED, "conn": conn.handle, "mtu": conn.att_mtu})

        conn.on("disconnection", on_disconnection)
        conn.on("connection_att_mtu_update", on_mtu)

    async def _remote_write(self, handle: int, conn: Connection, value: bytes) -> None:
        self.stats["writes"] += 1
        fut = self._post({"ev": IRQ_GATTS_WRITE, "conn": conn.handle, "handle": handle, "data": bytes(value).hex()},
                         wait=True)
        if fut is not None:
            await fut  # the ATT response leaves once the firmware's handler has returned

    async def _remote_read(self, handle: int, conn: Connection) -> bytes:
        fut = self._post({"ev": IRQ_GATTS_READ_REQUEST, "conn": conn.handle, "handle": handle}, wait=True)
        if fut is None:
            raise att.ATT_Error(ATT_UNLIKELY, handle)
        result = await fut
        if not isinstance(result, dict) or "value" not in result:
            code = int(result.get("err") or ATT_UNLIKELY) if isinstance(result, dict) else ATT_UNLIKELY
            raise att.ATT_Error(code & 0xFF, handle)
        return bytes.fromhex(result["value"])

    # --- GATT database --------------------------------------------------------------------
    def _value(self, handle_box: list[int]) -> CharacteristicValue[bytes]:
        async def read(conn: Connection) -> bytes:
            return await self._remote_read(handle_box[0], conn)

        async def write(conn: Connection, value: bytes) -> None:
            await self._remote_write(handle_box[0], conn, value)

        return CharacteristicValue(read=read, write=write)

    def _rebuild(self, services: list[Any]) -> list[list[int]]:
        """Replace the GATT server's contents, as ``ble_gatts_reset`` + ``ble_gatts_start`` do:
        the GAP service (its name read live), the GATT service, then the firmware's services.
        Returns the value handles per service, characteristics and their descriptors flattened
        in definition order (modbluetooth.c ``bluetooth_ble_gatts_register_services``)."""
        device = self.device
        assert device is not None
        srv = device.gatt_server
        srv.services.clear()
        srv.attributes.clear()
        srv.attributes_by_handle.clear()
        self.attrs.clear()
        gap = GenericAccessService("x")
        gap.device_name_characteristic.value = CharacteristicValue(read=lambda conn: self.gap_name)
        srv.add_service(gap)
        device.add_default_services(add_gap_service=False)
        boxes: list[list[tuple[list[int], Characteristic[Any] | Descriptor]]] = []
        for uuid, chars in services:
            objs: list[Characteristic[Any]] = []
            box_list: list[tuple[list[int], Characteristic[Any] | Descriptor]] = []
            for cuuid, cflags, descs in chars:
                cbox = [0]
                descriptors = []
                dboxes = []
                for duuid, dflags in descs:
                    dbox = [0]
                    d = Descriptor(duuid, _permissions(dflags), self._value(dbox))
                    descriptors.append(d)
                    dboxes.append((dbox, d))
                c: Characteristic[bytes] = Characteristic(
                    cuuid, _properties(cflags), _permissions(cflags), self._value(cbox), descriptors=descriptors)
                objs.append(c)
                box_list.append((cbox, c))
                box_list.extend(dboxes)
            srv.add_service(Service(uuid, objs))
            boxes.append(box_list)
        result = []
        for box_list in boxes:
            handles = []
            for box, obj in box_list:
                box[0] = obj.handle
                self.attrs[obj.handle] = obj
                handles.append(obj.handle)
            result.append(handles)
        return result

    # --- the hardware channel (parts.py) ----------------------------------------------------
    def ops(self) -> Mapping[str, Callable[[dict[str, Any]], Any]]:  # parts.HwOp (parts imports this module)
        return {
            "ble_active": self._hw_active, "ble_config": self._hw_config, "ble_adv": self._hw_adv,
            "ble_register": self._hw_register, "ble_notify": self._hw_notify,
            "ble_disconnect": self._hw_disconnect, "ble_event": self._hw_event,
        }

    def _need_active(self) -> None:
        if not self.active:
            raise OSError(19, "ENODEV")  # ERRNO_BLUETOOTH_NOT_ACTIVE

    def _hw_active(self, req: dict[str, Any]) -> Any:
        on = bool(req["on"])

        async def switch() -> bool:
            # mp_bluetooth_init starts with mp_bluetooth_deinit: active(True) restarts the stack
            was = self.active
            if was:
                await self._stack_down()
            if on:
                self._drop_events()
                self.active = True
            return self.active

        return switch()

    async def _stack_down(self) -> None:
        """mp_bluetooth_deinit: advertising stops, connections end (the peer hears 0x13),
        the GATT database is gone."""
        self.active = False
        self._drop_events()
        device = self.device
        assert device is not None
        if self.advertising:
            self.advertising = False
            await device.stop_advertising()
        for conn in list(self.connections.values()):
            try:
                await conn.disconnect(REMOTE_USER_TERMINATED)
            except Exception:  # noqa: BLE001
                pass
        self.connections.clear()
        self._rebuild([])

    def _hw_config(self, req: dict[str, Any]) -> Any:
        name = req["name"]
        if "value" not in req:
            if name == "gap_name":
                return self.gap_name.hex()
            self._need_active()
            if name == "mac":
                return [0, self.address.hex()]
            if name == "mtu":
                return self.mtu
            raise KeyError(name)
        value = req["value"]
        if name == "gap_name":
            raw = bytes.fromhex(value)
            if len(raw) > GAP_NAME_MAX:
                raise OSError(22, "EINVAL")
            self.gap_name = raw
            return None
        self._need_active()
        if name == "mtu":
            mtu = int(value)
            if not MTU_MIN <= mtu <= MTU_MAX:
                raise OSError(22, "EINVAL")
            self.mtu = mtu
            assert self.device is not None
            self.device.gatt_server.max_mtu = mtu
            return None
        raise KeyError(name)

    def _hw_adv(self, req: dict[str, Any]) -> Any:
        device = self.device
        assert device is not None

        async def stop() -> None:
            if self.advertising:
                self.advertising = False
                await device.stop_advertising()

        if req.get("interval_us") is None:
            return stop()
        self._need_active()
        itvl = int(req["interval_us"]) // 625  # BLE_HCI_ADV_ITVL: rounded down to 0.625 ms
        adv = bytes.fromhex(req["adv"]) if req.get("adv") is not None else None
        resp = bytes.fromhex(req["resp"]) if req.get("resp") is not None else None
        if (adv is not None and len(adv) > ADV_MAX) or (resp is not None and len(resp) > ADV_MAX):
            raise OSError(22, "EINVAL")
        if itvl == 0:
            itvl = 48  # NimBLE's default when itvl is 0: BLE_GAP_ADV_FAST_INTERVAL1_MIN (30 ms)
        if not ADV_ITVL_MIN <= itvl <= ADV_ITVL_MAX:
            raise OSError(22, "EINVAL")
        connectable = bool(req.get("connectable", True))
        if connectable and len(self.connections) >= MAX_CONNECTIONS:
            raise OSError(16, "EBUSY")

        async def start() -> None:
            await stop()
            if connectable:
                adv_type = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
            elif resp:
                adv_type = AdvertisingType.UNDIRECTED_SCANNABLE
            else:
                adv_type = AdvertisingType.UNDIRECTED
            await device.start_advertising(
                advertising_type=adv_type, own_address_type=hci.OwnAddressType.PUBLIC,
                advertising_data=adv, scan_response_data=resp,
                advertising_interval_min=itvl * 0.625, advertising_interval_max=itvl * 0.625)
            self.advertising = True
            self.stats["adv_starts"] += 1

        return start()

    def _hw_register(self, req: dict[str, Any]) -> Any:
        self._need_active()
        services = req["services"]
        if len(services) > MAX_SERVICES:
            raise OSError(7, "E2BIG")
        if self.advertising or self.connections:
            raise OSError(16, "EBUSY")  # NimBLE ble_gatts_reset: not while advertising or connected
        return self._rebuild(services)

    def _conn(self, handle: int) -> Connection:
        conn = self.connections.get(handle)
        if conn is None:
            raise OSError(107, "ENOTCONN")
        return conn

    def _hw_notify(self, req: dict[str, Any]) -> Any:
        self._need_active()
        device = self.device
        assert device is not None
        value = bytes.fromhex(req["data"])
        attr = self.attrs.get(int(req["handle"]))
        if attr is None or not isinstance(attr, Characteristic):
            raise OSError(22, "EINVAL")
        targets = list(self.connections.values()) if req.get("conn") is None else [self._conn(int(req["conn"]))]
        indicate = bool(req.get("indicate"))
        subscribed_only = req.get("conn") is None  # gatts_write(..., send_update=True)
        for conn in targets:
            # NimBLE cuts a notification or indication to ATT_MTU - 3 (ble_att_truncate_to_mtu)
            data = value[: conn.att_mtu - 3]
            self.stats["notifications"] += 1
            if subscribed_only:
                asyncio.ensure_future(device.notify_subscribers(attr, data) if not indicate
                                      else device.indicate_subscribers(attr, data))
            elif indicate:
                asyncio.ensure_future(self._indicate(conn, attr, data))
            else:
                asyncio.ensure_future(device.notify_subscriber(conn, attr, data, force=True))
        return None

    async def _indicate(self, conn: Connection, attr: Characteristic[Any], data: bytes) -> None:
        assert self.device is not None
        status = 0
        try:
            await self.device.indicate_subscriber(conn, attr, data, force=True)
        except Exception:  # noqa: BLE001 - timeout or link loss
            status = 13  # BLE_HS_ETIMEOUT
        self._post({"ev": IRQ_GATTS_INDICATE_DONE, "conn": conn.handle, "handle": attr.handle, "status": status})

    def _hw_disconnect(self, req: dict[str, Any]) -> Any:
        self._need_active()
        conn = self.connections.get(int(req["conn"]))
        if conn is None:
            return False
        asyncio.ensure_future(conn.disconnect(REMOTE_USER_TERMINATED))
        return True

    def _hw_event(self, req: dict[str, Any]) -> Awaitable[Any]:
        done = req.get("done")
        if done is not None:
            fut = self._pending.pop(int(done), None)
            if fut is not None and not fut.done():
                fut.set_result(req.get("result"))
        return self.events.get()

    def state(self) -> dict[str, Any]:
        return {"active": self.active, "address": self.address.hex(":"), "spec": self.spec,
                "advertising": self.advertising, "connections": sorted(self.connections),
                "gap_name": self.gap_name.decode("utf-8", "replace"), **self.stats}
