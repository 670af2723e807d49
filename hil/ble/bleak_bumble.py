"""A bleak backend on bumble: unmodified `BleakClient` / `BleakScanner` code talks to bumble GATT
servers over bumble's in-process virtual link, with no Bluetooth hardware or kernel support.

    radio = VirtualRadio()                      # inside the running event loop
    sensor = await SimulatedCgmSensor.start(radio, profile=...)
    client_cls, scanner_cls = radio.backends()
    async with BleakClient(sensor.address, backend=client_cls) as client:
        ...                                     # plain bleak from here on

A `VirtualRadio` is one `bumble.link.LocalLink` (the "air") plus one central `bumble.device.Device`
that every bleak client and scanner made from `radio.backends()` shares (like one adapter shared
by the programs on a PC). Peripherals (the simulated sensor) get their own Controller on the same
link through `radio.new_device()`. Everything lives in the event loop that created it: create the
radio inside `asyncio.run(...)` / the test's loop, never at import time.

What is implemented (all of `BaseBleakClient` that a GATT central needs): connect (+ full service,
characteristic and descriptor discovery, optionally filtered by `services=`), disconnect (and the
disconnected callback), read / write characteristics (with and without response) and descriptors,
start / stop notify (notifications preferred, indications when that is all the characteristic
offers), `mtu_size`, `name`. Pairing is accepted and ignored (bumble's virtual link is not
encrypted here); `unpair` raises. The scanner reports every advertisement of the link as bleak
`AdvertisementData` (local name, 16/128-bit service UUIDs, service data, manufacturer data,
tx power) and honours bleak's `service_uuids` filter.

`demo_backend` is the hook `pumpctl cgm ... --backend hil.ble.bleak_bumble:demo_backend` uses:
it starts a radio with one simulated CGM sensor at `DEMO_ADDRESS` and returns the two classes.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bleak.uuids import normalize_uuid_str
from bumble import att
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Device
from bumble.gatt import Characteristic
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

log = logging.getLogger(__name__)

CENTRAL_ADDRESS = "F0:F1:F2:F3:F4:F5"
CONNECT_TIMEOUT_S = 10.0

_PROPS = (  # bumble property bit -> bleak property name
    (Characteristic.Properties.BROADCAST, "broadcast"),
    (Characteristic.Properties.READ, "read"),
    (Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (Characteristic.Properties.WRITE, "write"),
    (Characteristic.Properties.NOTIFY, "notify"),
    (Characteristic.Properties.INDICATE, "indicate"),
    (Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
    (Characteristic.Properties.EXTENDED_PROPERTIES, "extended-properties"),
)


def bleak_uuid(u: UUID) -> str:
    """bumble UUID -> bleak's normalised 128-bit lower-case string."""
    return normalize_uuid_str(u.to_hex_str("-"))


class VirtualRadio:
    """One bumble LocalLink and a shared central Device (see the module docstring)."""

    _serial = itertools.count(1)

    def __init__(self, central_address: str = CENTRAL_ADDRESS):
        self.link = LocalLink()
        self.central_address = central_address
        self._central: Device | None = None
        self._central_lock = asyncio.Lock()
        self._scan_listeners: set[Callable[[Any], None]] = set()
        self._scanning = False
        self.names: dict[str, str] = {}  # address -> advertised local name

    def new_device(self, address: str, name: str = "bumble") -> Device:
        """A bumble Device with its own Controller on this radio's link (not powered on yet)."""
        ctrl = Controller(f"{name}-{next(self._serial)}", link=self.link, public_address=address)
        return Device(name=name, address=Address(address), host=Host(ctrl, AsyncPipeSink(ctrl)))

    async def central(self) -> Device:
        async with self._central_lock:
            if self._central is None:
                dev = self.new_device(self.central_address, "central")
                await dev.power_on()
                dev.on(dev.EVENT_ADVERTISEMENT, self._on_advertisement)
                self._central = dev
            return self._central

    # -- scanning, shared by every scanner of this radio (one adapter, many listeners) ------------
    async def find_advertiser(self, address: str, timeout: float) -> Address | None:
        """Wait (up to timeout s) for an advertisement from address; its bumble Address (with the
        address type) or None. Connecting first makes sure the peer exists, as BlueZ does: bumble's
        virtual controller never completes a connection to an absent peer, nor cancels one."""
        key = address.upper()
        fut = asyncio.get_running_loop().create_future()

        def on_adv(adv) -> None:
            if str(adv.address).split("/")[0].upper() == key and not fut.done():
                fut.set_result(adv.address)

        await self.add_scan_listener(on_adv)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            await self.remove_scan_listener(on_adv)

    def _on_advertisement(self, adv) -> None:
        key = str(adv.address).split("/")[0].upper()
        name, _data = advertisement_data(adv)
        if name:
            self.names[key] = name
        for cb in list(self._scan_listeners):
            cb(adv)

    async def add_scan_listener(self, cb: Callable[[Any], None]) -> None:
        dev = await self.central()
        self._scan_listeners.add(cb)
        if not self._scanning:
            self._scanning = True
            await dev.start_scanning(filter_duplicates=False)

    async def remove_scan_listener(self, cb: Callable[[Any], None]) -> None:
        self._scan_listeners.discard(cb)
        if self._scanning and not self._scan_listeners and self._central is not None:
            self._scanning = False
            await self._central.stop_scanning()

    def backends(self) -> tuple[type[BaseBleakClient], type[BaseBleakScanner]]:
        """(client backend, scanner backend) classes bound to this radio, for bleak's backend=."""
        client = type("BumbleBleakClient", (BumbleBleakClient,), {"radio": self})
        scanner = type("BumbleBleakScanner", (BumbleBleakScanner,), {"radio": self})
        return client, scanner

    async def close(self) -> None:
        self._scan_listeners.clear()
        if self._central is not None:
            if self._scanning:
                self._scanning = False
                await self._central.stop_scanning()
            for conn in list(self._central.connections.values()):
                try:
                    await conn.disconnect()
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    pass


def _radio_of(cls) -> VirtualRadio:
    radio = getattr(cls, "radio", None)
    if radio is None:
        raise BleakError("this bumble backend is not bound to a VirtualRadio: use VirtualRadio.backends()")
    return radio


def _gatt_error(e: att.ATT_Error) -> BleakGATTProtocolError:
    return BleakGATTProtocolError(int(e.error_code))


class BumbleBleakClient(BaseBleakClient):
    """bleak client backend on a bumble central. Use via `VirtualRadio.backends()`."""

    radio: VirtualRadio | None = None

    def __init__(self, address_or_ble_device: BLEDevice | str, *, services: set[str] | None = None,
                 disconnected_callback: Callable[[], None] | None = None, timeout: float = CONNECT_TIMEOUT_S,
                 **kwargs: Any):
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self._wanted = services
        self._conn = None
        self._peer_name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            self._peer_name = address_or_ble_device.name
        self._subs: dict[int, tuple[Any, Callable]] = {}

    @property
    def name(self) -> str:
        return self._peer_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._conn.att_mtu if self._conn is not None else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    async def connect(self, pair: bool = False, **kwargs: Any) -> None:
        radio = _radio_of(type(self))
        central = await radio.central()
        timeout = kwargs.get("timeout", self._timeout)
        peer = await radio.find_advertiser(self.address, timeout)
        if peer is None:
            raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.")
        self._peer_name = self._peer_name or radio.names.get(self.address.upper())
        try:
            conn = await asyncio.wait_for(central.connect(peer, timeout=None), timeout)
        except Exception as e:  # bumble raises its own HCI errors
            raise BleakError(f"could not connect to {self.address}: {e!r}") from e
        self._conn = conn
        conn.on(conn.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            self.services = await self._discover(conn.gatt_client)
        except Exception:
            await self.disconnect()
            raise

    async def _discover(self, gc) -> BleakGATTServiceCollection:
        coll = BleakGATTServiceCollection()
        uuids = [UUID(u) for u in self._wanted] if self._wanted else []
        for svc in await gc.discover_services(uuids):
            bsvc = BleakGATTService(svc, svc.handle, bleak_uuid(svc.uuid))
            coll.add_service(bsvc)
            for ch in await gc.discover_characteristics(uuids=[], service=svc):
                props = [n for bit, n in _PROPS if ch.properties & bit]
                bch = BleakGATTCharacteristic(ch, ch.handle, bleak_uuid(ch.uuid), props,
                                              lambda: self.mtu_size - 3, bsvc)
                coll.add_characteristic(bch)
                for d in await gc.discover_descriptors(ch):
                    coll.add_descriptor(BleakGATTDescriptor(d, d.handle, bleak_uuid(d.type), bch))
        return coll

    def _on_disconnection(self, *_args) -> None:
        self._conn = None
        self._subs.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._subs.clear()
        if conn is not None:
            conn.remove_listener(conn.EVENT_DISCONNECTION, self._on_disconnection)
            try:
                await conn.disconnect()
            except Exception as e:  # noqa: BLE001 - already gone is fine
                log.debug("disconnect: %r", e)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        return None  # the virtual link needs no pairing

    async def unpair(self) -> None:
        raise NotImplementedError("the bumble backend keeps no bonds")

    def _gc(self):
        if self._conn is None:
            raise BleakError("Not connected")
        return self._conn.gatt_client

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        try:
            return bytearray(await self._gc().read_value(characteristic.handle))
        except att.ATT_Error as e:
            raise _gatt_error(e) from e

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        try:
            return bytearray(await self._gc().read_value(descriptor.handle))
        except att.ATT_Error as e:
            raise _gatt_error(e) from e

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data, response: bool) -> None:
        try:
            await self._gc().write_value(characteristic.handle, bytes(data), with_response=response)
        except att.ATT_Error as e:
            raise _gatt_error(e) from e

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data) -> None:
        try:
            await self._gc().write_value(descriptor.handle, bytes(data), with_response=True)
        except att.ATT_Error as e:
            raise _gatt_error(e) from e

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        gc = self._gc()

        def deliver(value: bytes) -> None:
            callback(bytearray(value))

        try:
            await gc.subscribe(characteristic.obj, deliver, prefer_notify=True)
        except att.ATT_Error as e:
            raise _gatt_error(e) from e
        self._subs[characteristic.handle] = (characteristic.obj, deliver)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        sub = self._subs.pop(characteristic.handle, None)
        if sub is None or self._conn is None:
            return
        try:
            await self._gc().unsubscribe(sub[0], sub[1])
        except att.ATT_Error as e:
            raise _gatt_error(e) from e


def advertisement_data(adv) -> tuple[str | None, AdvertisementData]:
    """bumble Advertisement -> (local name, bleak AdvertisementData)."""
    name = None
    uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    mfr: dict[int, bytes] = {}
    tx = None
    T = AdvertisingData
    for ad_type, data in adv.data.ad_structures:
        if ad_type in (T.COMPLETE_LOCAL_NAME, T.SHORTENED_LOCAL_NAME):
            if name is None or ad_type == T.COMPLETE_LOCAL_NAME:
                name = bytes(data).decode("utf-8", "replace")
        elif ad_type in (T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS):
            uuids += [normalize_uuid_str(f"{u:04x}") for (u,) in struct.iter_unpack("<H", data[: len(data) // 2 * 2])]
        elif ad_type in (T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                         T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS):
            uuids += [bleak_uuid(UUID.from_bytes(bytes(data[i:i + 16]))) for i in range(0, len(data) - 15, 16)]
        elif ad_type == T.SERVICE_DATA_16_BIT_UUID and len(data) >= 2:
            service_data[normalize_uuid_str(f"{data[0] | data[1] << 8:04x}")] = bytes(data[2:])
        elif ad_type == T.MANUFACTURER_SPECIFIC_DATA and len(data) >= 2:
            mfr[data[0] | data[1] << 8] = bytes(data[2:])
        elif ad_type == T.TX_POWER_LEVEL and len(data) >= 1:
            tx = struct.unpack("<b", bytes(data[:1]))[0]
    uuids = list(dict.fromkeys(uuids))
    rssi = adv.rssi if adv.rssi != adv.RSSI_NOT_AVAILABLE else -60
    return name, AdvertisementData(local_name=name, manufacturer_data=mfr, service_data=service_data,
                                   service_uuids=uuids, tx_power=tx, rssi=rssi, platform_data=(adv,))


class BumbleBleakScanner(BaseBleakScanner):
    """bleak scanner backend on the radio's central. Use via `VirtualRadio.backends()`."""

    radio: VirtualRadio | None = None

    def __init__(self, detection_callback=None, service_uuids=None, scanning_mode: str = "active", **kwargs: Any):
        super().__init__(detection_callback, service_uuids)
        if self._service_uuids is not None:  # accept "181f" as well as the 128-bit form
            self._service_uuids = [normalize_uuid_str(u) for u in self._service_uuids]
        self._scanning_mode = scanning_mode

    def _on_adv(self, adv) -> None:
        name, data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        addr = str(adv.address).split("/")[0]
        device = self.create_or_update_device(addr, addr, name, adv, data)
        self.call_detection_callbacks(device, data)

    async def start(self) -> None:
        self.seen_devices = {}
        await _radio_of(type(self)).add_scan_listener(self._on_adv)

    async def stop(self) -> None:
        await _radio_of(type(self)).remove_scan_listener(self._on_adv)


# ---- the demo hook for pumpctl (and anyone without hardware) -----------------------------------
DEMO_ADDRESS = "C0:98:E5:49:00:01"


async def demo_backend() -> tuple[type[BaseBleakClient], type[BaseBleakScanner]]:
    """A VirtualRadio with one simulated CGM sensor (address DEMO_ADDRESS, name "Basalt SimCGM")
    emitting a reading every 50 ms of wall time (each one 5 sensor-minutes apart: a fast-forward
    demo), following a slow sine around 140 mg/dL. Called by host.cgm inside the running loop."""
    import math

    from hil.ble.sensor import SimulatedCgmSensor

    radio = VirtualRadio()
    sensor = await SimulatedCgmSensor.start(
        radio, address=DEMO_ADDRESS, profile=lambda t_min: 140 + 50 * math.sin(t_min / 90), seed=1,
        backfill=6)
    t0 = time.monotonic()
    sensor.run_in_background(period_s=0.05, start_after_s=0.0)
    log.debug("demo sensor up in %.1f ms", (time.monotonic() - t0) * 1000)
    return radio.backends()
