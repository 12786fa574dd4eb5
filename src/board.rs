//! Board selection: one `probe()` per board, like TinyGo's `probe.Probe()`.
//!
//! A firmware targets one board, and the board decides which driver serves
//! the network: the app only sees a [`Device`](crate::Device) (sockets and
//! link control). Each board has a cargo feature that turns on the drivers
//! it needs and a module whose `probe` takes the board's peripherals and
//! returns its device:
//!
//! | feature               | module          | chip and transport                           | device |
//! |-----------------------|-----------------|----------------------------------------------|--------|
//! | `board-w5500-macraw`  | `w5500_macraw`  | W5500 on SPI, MACRAW; full stack on the MCU  | `Stack` over `W5500Link` |
//! | `board-w5500-offload` | `w5500_offload` | W5500 on SPI, its hardwired TCP/IP           | `W5500Offload` |
//! | `board-esp-at`        | `esp_at`        | ESP32/ESP8266 with AT firmware on a UART     | `EspAt` |
//! | `board-esp-hosted`    | `esp_hosted`    | ESP32 with ESP-Hosted-FG on SPI + 2 GPIOs    | `Stack` over `EspHostedLink` |
//! | `board-tap`           | `tap`           | a Linux TAP interface (host only)            | `HostStack` |
//!
//! Select one board feature, and `board::probe` (with `board::BoardDevice`
//! and `board::NAME`) is that board's; selecting two is a compile error. The board
//! modules themselves exist whenever their drivers are compiled in (the
//! default host build has all of them), so host tools can probe any board.
//!
//! This module is construction glue only: every `probe` builds the drivers
//! exactly as their own docs describe, and adds no behaviour of its own.
//!
//! ```ignore
//! // Cargo.toml: netdever = { default-features = false, features = ["board-w5500-offload"] }
//! use netdever::{board, ConnectParams, IpMode, Netlinker};
//! let dev = board::probe(spi, platform, board::w5500_offload::config(mac))?;
//! dev.net_connect(&ConnectParams { ip: IpMode::Dhcp, ..Default::default() })?;
//! // ... the same socket code on every board ...
//! ```

#[cfg(any(
    all(
        feature = "board-w5500-macraw",
        any(
            feature = "board-w5500-offload",
            feature = "board-esp-at",
            feature = "board-esp-hosted",
            feature = "board-tap"
        )
    ),
    all(
        feature = "board-w5500-offload",
        any(
            feature = "board-esp-at",
            feature = "board-esp-hosted",
            feature = "board-tap"
        )
    ),
    all(
        feature = "board-esp-at",
        any(feature = "board-esp-hosted", feature = "board-tap")
    ),
    all(feature = "board-esp-hosted", feature = "board-tap"),
))]
compile_error!(
    "select at most one board feature (board-w5500-macraw, board-w5500-offload, board-esp-at, \
     board-esp-hosted, board-tap): a firmware runs on one board"
);

#[cfg(feature = "full-stack")]
pub use self::parts::StackParts;

#[cfg(feature = "full-stack")]
mod parts {
    use crate::error::Result;
    use crate::phy::Link;
    use crate::platform::Platform;
    use crate::stack::{BufferSource, Stack, StackConfig};

    /// What the full stack needs besides its link, for the boards whose
    /// TCP/IP runs on the MCU: the [`Platform`] (clock, lock, waits), the
    /// stack's sizes and address mode, the memory its sockets live in, and
    /// a random number generator (TCP initial sequence numbers, ephemeral
    /// ports, DNS ids — use the MCU's hardware RNG).
    ///
    /// ```ignore
    /// let parts = StackParts {
    ///     platform: SpinPlatform::new(|| Instant::from_micros(timer.now_us())),
    ///     config: StackConfig { tcp_sockets: 8, udp_sockets: 2, ..Default::default() },
    ///     resources: SliceResources::new(storage, udp_meta, dns_queries, arena),
    ///     rng: hw_rng,
    /// };
    /// ```
    #[derive(Debug)]
    pub struct StackParts<P, B, R> {
        /// Clock, lock and waits of the device.
        pub platform: P,
        /// Socket pool sizes, buffer sizes, and how the stack gets its address.
        pub config: StackConfig,
        /// Where socket memory comes from ([`SliceResources`](crate::stack::SliceResources)
        /// on bare metal).
        pub resources: B,
        /// Seeds sequence numbers, ports and DNS ids.
        pub rng: R,
    }

    impl<P: Platform, B, R: rand_core::RngCore> StackParts<P, B, R> {
        /// Start the stack on `link` (what each full-stack board's `probe`
        /// does last; use it directly for a link no board module covers).
        pub fn build<'a, L: Link>(self, link: L) -> Result<Stack<'a, L, P>>
        where
            B: BufferSource<'a>,
        {
            let mut rng = self.rng;
            Stack::new(link, self.platform, &self.config, self.resources, &mut rng)
        }
    }
}

/// WIZnet W5500 in MACRAW mode: the chip is only a MAC+PHY, the full stack
/// (smoltcp) runs on the MCU.
///
/// # Wiring
///
/// * SPI mode 0 or 3, MSB first, up to ~33 MHz in practice; one
///   `embedded_hal::spi::SpiDevice` owning the chip-select line (for
///   example `embedded_hal_bus::spi::ExclusiveDevice` over the SPI bus and
///   the CS pin).
/// * RSTn: hold high (pulse low ≥ 500 µs at power-up if it is wired to a
///   GPIO; the driver also soft-resets the chip).
/// * INTn (optional, active low): the link enables it for "frame received".
///   On bare metal call the stack's [`poll`](crate::stack::Stack::poll)
///   from the INTn interrupt or the main loop; on a host give
///   `probe_host` (feature `std`) an `RxSignal` that waits for INTn.
///
/// # Receive window
///
/// The chip's MACRAW receive ring is 16 KiB; a frame that arrives when it is
/// full is lost on the wire, and TCP then waits out a retransmission
/// timeout. Keep the sum of the TCP receive windows that can be filling at
/// once (`StackConfig::tcp_rx_buffer` per connection) at or below
/// [`phy::w5500::MAX_TCP_WINDOW`](crate::phy::w5500::MAX_TCP_WINDOW)
/// (14600 bytes: 10 full frames); the 16 KiB default of `StackConfig` is
/// above it.
///
/// ```ignore
/// let spi = ExclusiveDevice::new(spi_bus, cs_pin, delay)?;
/// let dev = board::w5500_macraw::probe(spi, MAC, parts)?;
/// loop { dev.poll(); /* or sleep until INTn / the returned instant */ }
/// ```
#[cfg(all(feature = "w5500", feature = "full-stack"))]
pub mod w5500_macraw {
    use embedded_hal::spi::SpiDevice;

    use super::StackParts;
    use crate::error::Result;
    use crate::phy::w5500::W5500Link;
    use crate::platform::Platform;
    use crate::stack::{BufferSource, Stack};

    /// The device this board's [`probe`] returns.
    pub type BoardDevice<'a, SPI, P> = Stack<'a, W5500Link<SPI>, P>;

    /// Check the chip on `spi` (VERSIONR must read 0x04, else
    /// [`Error::Device`](crate::Error::Device)), reset it, give it `mac`,
    /// open socket 0 in MACRAW, and start the full stack on it with `parts`.
    ///
    /// `mac` should be a locally administered address (`0x02` in the first
    /// byte) unless the board carries an assigned one (the W5500 has none).
    pub fn probe<'a, SPI, P, B, R>(
        spi: SPI,
        mac: [u8; 6],
        parts: StackParts<P, B, R>,
    ) -> Result<BoardDevice<'a, SPI, P>>
    where
        SPI: SpiDevice + Send,
        P: Platform,
        B: BufferSource<'a>,
        R: rand_core::RngCore,
    {
        let link = W5500Link::new(spi, mac)?;
        parts.build(link)
    }

    /// The device [`probe_host`] returns: a stack with its own driver thread.
    #[cfg(feature = "std")]
    pub type HostDevice = crate::stack::host::HostStack;

    /// On a host (feature `std`): the same chip setup, then a
    /// [`HostStack`](crate::stack::host::HostStack) (heap buffers, std
    /// platform, driver thread) on it. `int` lets the driver thread sleep
    /// until INTn falls instead of polling the chip.
    #[cfg(feature = "std")]
    pub fn probe_host<SPI>(
        spi: SPI,
        mac: [u8; 6],
        int: Option<std::sync::Arc<dyn crate::phy::RxSignal>>,
        config: crate::stack::StackConfig,
    ) -> Result<HostDevice>
    where
        SPI: SpiDevice + Send + 'static,
    {
        let mut link = W5500Link::new(spi, mac)?;
        if let Some(signal) = int {
            link = link.with_rx_signal(signal);
        }
        crate::stack::host::HostStack::new(link, config)
    }
}

/// WIZnet W5500 as a firmware-offload device: the chip's eight hardwired
/// TCP/UDP sockets, DHCP and DNS run by the driver over them.
///
/// # Wiring
///
/// * SPI as for `w5500_macraw`: mode 0/3, one
///   `SpiDevice` owning CS.
/// * INTn (optional, active low): set [`W5500Config::interrupts`](crate::offload::w5500::W5500Config::interrupts) and call
///   [`W5500Offload::on_interrupt`](crate::offload::w5500::W5500Offload::on_interrupt) from the falling-edge interrupt (or a
///   host thread waiting on the line); blocked calls then wake at once.
///   Without it, waiting calls re-read the chip every
///   [`W5500Config::poll_interval`](crate::offload::w5500::W5500Config::poll_interval).
/// * Call [`W5500Offload::poll`](crate::offload::w5500::W5500Offload::poll) now and then (main loop) for link events and
///   DHCP renewal.
///
/// ```ignore
/// let dev = board::w5500_offload::probe(spi, platform, board::w5500_offload::config(MAC))?;
/// // EXTI handler for INTn: dev.on_interrupt();
/// ```
#[cfg(feature = "w5500")]
pub mod w5500_offload {
    use embedded_hal::spi::SpiDevice;

    use crate::error::Result;
    pub use crate::offload::w5500::{W5500Config, W5500Offload};
    use crate::platform::Platform;

    /// The device this board's [`probe`] returns.
    pub type BoardDevice<SPI, P> = W5500Offload<SPI, P>;

    /// The driver settings for a board with INTn wired (`interrupts: true`)
    /// and MAC `mac`; everything else at its default.
    pub fn config(mac: [u8; 6]) -> W5500Config {
        W5500Config {
            mac,
            interrupts: true,
            ..W5500Config::default()
        }
    }

    /// Check the chip on `spi` (VERSIONR 0x04, else
    /// [`Error::Device`](crate::Error::Device)), reset and configure it per
    /// `config`. The device gets its address with
    /// [`net_connect`](crate::Netlinker::net_connect) (DHCP or static).
    pub fn probe<SPI, P>(spi: SPI, platform: P, config: W5500Config) -> Result<BoardDevice<SPI, P>>
    where
        SPI: SpiDevice + Send,
        P: Platform,
    {
        W5500Offload::new(spi, platform, config)
    }
}

/// An ESP32 / ESP8266 running Espressif's AT firmware (2.x or later) on a
/// UART: Wi-Fi and TCP/IP run on the chip.
///
/// # Wiring
///
/// * UART TX/RX crossed to the chip's AT port (115200 8N1 by default), as an
///   `embedded_io::Read + Write + ReadReady` serial port; RTS/CTS if the
///   firmware was built with flow control.
/// * EN (CHIP_PU) high, GPIO0/strapping pins for normal boot.
/// * Call the device's platform `notify()` from the UART RX interrupt so
///   blocked calls wake at once (else they re-read the UART every
///   [`Config::poll_interval`](crate::offload::espat::Config::poll_interval)), or [`EspAt::poll`](crate::offload::espat::EspAt::poll) from the main loop.
///
/// ```ignore
/// let dev = board::esp_at::probe(uart, platform, board::esp_at::Config::default())?;
/// dev.net_connect(&ConnectParams { ssid: "my-ssid", passphrase: "secret", ..Default::default() })?;
/// ```
#[cfg(feature = "esp-at")]
pub mod esp_at {
    use embedded_io::{Read, ReadReady, Write};

    use crate::error::Result;
    pub use crate::offload::espat::{Config, EspAt};
    use crate::platform::Platform;

    /// The device this board's [`probe`] returns.
    pub type BoardDevice<S, P> = EspAt<S, P>;

    /// Start the driver on `serial` and set the chip up now (sync, echo
    /// off, multi-connection, passive receive): a chip that does not answer
    /// is an error here rather than on the first socket call.
    pub fn probe<S, P>(serial: S, platform: P, config: Config) -> Result<BoardDevice<S, P>>
    where
        S: Read + Write + ReadReady,
        P: Platform,
    {
        let dev = EspAt::new(serial, platform, config);
        dev.init()?;
        Ok(dev)
    }
}

/// An ESP32 running ESP-Hosted-FG as a Wi-Fi bridge on SPI: 802.3 frames
/// cross the bus, the full stack runs on the MCU.
///
/// # Wiring
///
/// * SPI full duplex in the mode and at the clock the firmware was built
///   for (ESP-Hosted-FG's SPI docs), one `SpiDevice` owning CS.
/// * Handshake GPIO (input): high while the ESP32 is ready for a transfer.
/// * Data-ready GPIO (input): high while it has something to send; on a
///   host, `probe_host`'s `signal` should wait for it to rise.
/// * ESP32 EN (reset) on a host GPIO: ESP-Hosted expects the host to reset
///   the chip before it starts, so pulse EN low before calling `probe`
///   (which then waits for the firmware's boot event).
///
/// On bare metal the station joins the access point in `probe` (pass the
/// credentials), or later with `dev.with_link(|l| l.connect_ap(ssid, pass))`;
/// the stack's `net_connect` then only waits for the address. On a host,
/// `probe_host` (feature `std`) returns an `EspHostedDevice`,
/// whose `net_connect` joins the access point itself and rejoins after a
/// chip reset.
///
/// ```ignore
/// let dev = board::esp_hosted::probe(spi, handshake, data_ready, Some(clock),
///                                    Some(("my-ssid", "secret")), parts)?;
/// ```
#[cfg(all(feature = "esp-hosted", feature = "full-stack"))]
pub mod esp_hosted {
    use embedded_hal::digital::InputPin;
    use embedded_hal::spi::SpiDevice;

    use super::StackParts;
    use crate::error::Result;
    use crate::phy::esp_hosted::EspHostedLink;
    use crate::platform::Platform;
    use crate::stack::{BufferSource, Stack};
    use crate::time::Instant;

    /// The device this board's [`probe`] returns.
    pub type BoardDevice<'a, SPI, HS, DR, P> = Stack<'a, EspHostedLink<SPI, HS, DR>, P>;

    /// Wait for the chip's boot event, read its station MAC, join the
    /// access point if `wifi` (`(ssid, passphrase)`) is given, and start the
    /// full stack on the link with `parts`.
    ///
    /// `clock` bounds the chip's control calls in time; without one they
    /// give up after a fixed number of polls (see
    /// [`EspHostedLink::with_clock`]).
    pub fn probe<'a, SPI, HS, DR, P, B, R>(
        spi: SPI,
        handshake: HS,
        data_ready: DR,
        clock: Option<fn() -> Instant>,
        wifi: Option<(&str, &str)>,
        parts: StackParts<P, B, R>,
    ) -> Result<BoardDevice<'a, SPI, HS, DR, P>>
    where
        SPI: SpiDevice + Send,
        HS: InputPin + Send,
        DR: InputPin + Send,
        P: Platform,
        B: BufferSource<'a>,
        R: rand_core::RngCore,
    {
        let mut link = EspHostedLink::new(spi, handshake, data_ready);
        if let Some(c) = clock {
            link = link.with_clock(c);
        }
        link.wait_ready()?;
        link.get_mac()?;
        if let Some((ssid, passphrase)) = wifi {
            link.connect_ap(ssid, passphrase)?;
        }
        parts.build(link)
    }

    /// The device [`probe_host`] returns.
    #[cfg(feature = "std")]
    pub type HostDevice<SPI, HS, DR> = crate::phy::esp_hosted::EspHostedDevice<SPI, HS, DR>;

    /// On a host (feature `std`): an
    /// [`EspHostedDevice`](crate::phy::esp_hosted::EspHostedDevice) — the
    /// stack on its own driver thread, and `net_connect` joining the access
    /// point. `signal` lets the driver sleep until data-ready rises.
    #[cfg(feature = "std")]
    pub fn probe_host<SPI, HS, DR>(
        spi: SPI,
        handshake: HS,
        data_ready: DR,
        signal: Option<std::sync::Arc<dyn crate::phy::RxSignal>>,
        config: crate::stack::StackConfig,
    ) -> Result<HostDevice<SPI, HS, DR>>
    where
        SPI: SpiDevice + Send + 'static,
        HS: InputPin + Send + 'static,
        DR: InputPin + Send + 'static,
    {
        let mut link = EspHostedLink::new(spi, handshake, data_ready);
        if let Some(s) = signal {
            link = link.with_rx_signal(s);
        }
        crate::phy::esp_hosted::EspHostedDevice::new(link, config)
    }
}

/// A Linux TAP interface on the host: the full stack on raw frames the
/// kernel exchanges with the interface's other side.
///
/// Needs root or `CAP_NET_ADMIN` and `/dev/net/tun`; the interface is
/// created if it does not exist, and must be up (`ip link set NAME up`) for
/// `net_connect` to succeed.
#[cfg(all(feature = "tap", feature = "full-stack"))]
pub mod tap {
    use crate::phy::tap::TapLink;
    use crate::stack::host::HostStack;
    use crate::stack::StackConfig;

    /// The device this board's [`probe`] returns.
    pub type BoardDevice = HostStack;

    /// Open (or create) TAP interface `name` and start a stack on it.
    pub fn probe(name: &str, config: StackConfig) -> std::io::Result<BoardDevice> {
        let link = TapLink::open(name)?;
        Ok(HostStack::new(link, config)?)
    }
}

// The selected board. If several board features are on, the compile_error!
// above is the error: the cfgs below pick the first so nothing else fails.

/// The selected board's `probe`, and the type of device it returns.
#[cfg(feature = "board-w5500-macraw")]
pub use self::w5500_macraw::{probe, BoardDevice};
/// The selected board's name (as `--board` spells it).
#[cfg(feature = "board-w5500-macraw")]
pub const NAME: &str = "w5500-macraw";

/// The selected board's `probe`, and the type of device it returns.
#[cfg(all(feature = "board-w5500-offload", not(feature = "board-w5500-macraw")))]
pub use self::w5500_offload::{probe, BoardDevice};
/// The selected board's name (as `--board` spells it).
#[cfg(all(feature = "board-w5500-offload", not(feature = "board-w5500-macraw")))]
pub const NAME: &str = "w5500-offload";

/// The selected board's `probe`, and the type of device it returns.
#[cfg(all(
    feature = "board-esp-at",
    not(any(feature = "board-w5500-macraw", feature = "board-w5500-offload"))
))]
pub use self::esp_at::{probe, BoardDevice};
/// The selected board's name (as `--board` spells it).
#[cfg(all(
    feature = "board-esp-at",
    not(any(feature = "board-w5500-macraw", feature = "board-w5500-offload"))
))]
pub const NAME: &str = "esp-at";

/// The selected board's `probe`, and the type of device it returns.
#[cfg(all(
    feature = "board-esp-hosted",
    not(any(
        feature = "board-w5500-macraw",
        feature = "board-w5500-offload",
        feature = "board-esp-at"
    ))
))]
pub use self::esp_hosted::{probe, BoardDevice};
/// The selected board's name (as `--board` spells it).
#[cfg(all(
    feature = "board-esp-hosted",
    not(any(
        feature = "board-w5500-macraw",
        feature = "board-w5500-offload",
        feature = "board-esp-at"
    ))
))]
pub const NAME: &str = "esp-hosted";

/// The selected board's `probe`, and the type of device it returns.
#[cfg(all(
    feature = "board-tap",
    not(any(
        feature = "board-w5500-macraw",
        feature = "board-w5500-offload",
        feature = "board-esp-at",
        feature = "board-esp-hosted"
    ))
))]
pub use self::tap::{probe, BoardDevice};
/// The selected board's name (as `--board` spells it).
#[cfg(all(
    feature = "board-tap",
    not(any(
        feature = "board-w5500-macraw",
        feature = "board-w5500-offload",
        feature = "board-esp-at",
        feature = "board-esp-hosted"
    ))
))]
pub const NAME: &str = "tap";
