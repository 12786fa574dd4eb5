//! SNTP (RFC 4330) server side for the simulated peer, and time helpers:
//! NTP timestamps and UTC formatting. The client side is the `sntpc` crate
//! (see the `ntpclient` example).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// An NTP packet without extensions.
pub const PACKET_LEN: usize = 48;

/// A system time as a 64-bit NTP timestamp (era 0).
pub fn ntp_timestamp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The server's answer to an SNTP client request, `None` if `req` is not a
/// client request (mode 3). `now` stamps receive and transmit; the clock
/// claims stratum 1, synchronized a second ago.
pub fn answer(req: &[u8], now: SystemTime) -> Option<[u8; PACKET_LEN]> {
    if req.len() < PACKET_LEN {
        return None;
    }
    let version = (req[0] >> 3) & 0x07;
    let mode = req[0] & 0x07;
    if mode != 3 || !(1..=4).contains(&version) {
        return None;
    }
    let mut p = [0u8; PACKET_LEN];
    p[0] = (version << 3) | 4; // LI 0 (no warning), server
    p[1] = 1; // stratum 1: a primary reference
    p[2] = req[2]; // poll, as asked
    p[3] = (-20i8) as u8; // precision ~1 us
                          // Root delay 0, root dispersion ~1 ms (16.16 seconds).
    p[8..12].copy_from_slice(&(65u32).to_be_bytes());
    p[12..16].copy_from_slice(b"SIM\0");
    let ts = ntp_timestamp(now);
    let reference = ntp_timestamp(now - Duration::from_secs(1));
    p[16..24].copy_from_slice(&reference.to_be_bytes());
    p[24..32].copy_from_slice(&req[40..48]); // originate = client's transmit
    p[32..40].copy_from_slice(&ts.to_be_bytes()); // receive
    p[40..48].copy_from_slice(&ts.to_be_bytes()); // transmit
    Some(p)
}

/// `2025-01-31 12:34:56.789 UTC` for Unix seconds and microseconds.
pub fn format_utc(unix_secs: u64, micros: u32) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros / 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0, 0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(
            format_utc(951_782_400, 5_000),
            "2000-02-29 00:00:00.005 UTC"
        );
        assert_eq!(format_utc(1_700_000_000, 0), "2023-11-14 22:13:20.000 UTC");
    }

    #[test]
    fn answers_client_requests_only() {
        let mut req = [0u8; PACKET_LEN];
        req[0] = (4 << 3) | 3;
        req[40..48].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = answer(&req, now).unwrap();
        assert_eq!(a[0] & 7, 4);
        assert_eq!(&a[24..32], &req[40..48]);
        assert_eq!(
            u64::from_be_bytes(a[40..48].try_into().unwrap()) >> 32,
            1_700_000_000 + NTP_UNIX_OFFSET
        );
        req[0] = (4 << 3) | 4;
        assert!(answer(&req, now).is_none());
    }
}
