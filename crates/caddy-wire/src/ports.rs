//! Choosing loopback ports for local clusters (`caddyd dev`, tests).
//!
//! A port handed out by binding port 0 comes from the kernel's ephemeral
//! range, the same range every outgoing connection on the machine takes its
//! local port from. Between choosing such a port and the node binding it,
//! another process's outgoing connection can take it, and the node then
//! fails to start. Ports chosen here come from below that range (or above
//! it where there is room), where only explicit binds land, and are checked
//! free for both TCP and UDP so that one number serves any listener.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// The lowest port considered: below it sit well-known services.
const LOWEST: u16 = 10_000;
/// Attempts at a random port before falling back to the kernel's choice.
const ATTEMPTS: usize = 500;

/// A loopback port free for both TCP and UDP right now, outside the
/// kernel's ephemeral port range when that range leaves room.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let (low, high) = ephemeral_range();
    let candidates: Option<(u16, u16)> = if low > LOWEST + 1_000 {
        Some((LOWEST, low - 1))
    } else if high < u16::MAX - 1_000 {
        Some((high + 1, u16::MAX))
    } else {
        None
    };
    if let Some((from, to)) = candidates {
        for _ in 0..ATTEMPTS {
            let port = rand::random_range(from..=to);
            if bindable(port) {
                return Ok(port);
            }
        }
    }
    for _ in 0..ATTEMPTS {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free loopback port found"))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The kernel's ephemeral port range (Linux's default where it cannot be read).
fn ephemeral_range() -> (u16, u16) {
    let parsed = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|text| {
        let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
        Some((parts.next()??, parts.next()??))
    });
    match parsed {
        Some((low, high)) if low <= high => (low, high),
        _ => (32_768, 60_999),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_ports_are_bindable_and_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let port = free_loopback_port().expect("a free port");
            assert!(bindable(port), "port {port} is not bindable");
            if low > LOWEST + 1_000 {
                assert!((LOWEST..low).contains(&port), "port {port} inside the ephemeral range {low}-{high}");
            }
            seen.insert(port);
        }
        assert!(seen.len() > 1, "the same port every time: {seen:?}");
    }
}
