//! The client's address behind reverse proxies: a pure rule, so every per-address decision
//! (the console's sign-in limit) sees the same address.
//!
//! The TCP peer is the client unless the peer is a proxy the operator trusts
//! (`BYOK_TRUSTED_PROXIES`). Then `X-Forwarded-For` is read from the right: each trusted
//! proxy appends the address it received the request from, so the right-most entry that is
//! not itself a trusted proxy is the client. Entries further left were written by the client
//! (or by proxies nobody vouches for) and are never looked at. A malformed entry met on the way
//! makes the header worthless: the peer is used.
//!
//! So a client that sends its own `X-Forwarded-For` gains nothing: straight to the service its
//! header is ignored (its peer is not trusted), and through a trusted proxy its entries are to
//! the left of the address the proxy appended.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::policy::{AllowRule, in_cidr};

/// Most `X-Forwarded-For` entries looked at (a longer chain of trusted proxies is not real).
const MAX_HOPS: usize = 32;

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Trusts no proxy: the peer is always the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list of addresses and CIDR ranges (`10.0.0.0/8, ::1`); empty
    /// entries are skipped. Anything else (a host name, a bad prefix) is an error naming it,
    /// and so is a range of every address (`0.0.0.0/0`, `::/0`): trusting every peer would let
    /// any client name its own address.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match AllowRule::from_str(entry) {
                Ok(AllowRule::Cidr { prefix: 0, .. }) => {
                    return Err(format!(
                        "'{entry}' trusts every address: any client could then name its own \
                         address; list the proxies' addresses or ranges"
                    ));
                }
                Ok(AllowRule::Cidr { network, prefix }) => ranges.push((network, prefix)),
                _ => {
                    return Err(format!(
                        "'{entry}' is not an IP address or a CIDR range (like 10.0.0.0/8)"
                    ));
                }
            }
        }
        Ok(Self { ranges })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.ranges
            .iter()
            .any(|(network, prefix)| in_cidr(ip, *network, *prefix))
    }

    /// The client's address: `peer`, unless `peer` is trusted; then the right-most entry of
    /// `forwarded_for` (the `X-Forwarded-For` header values, in the order received) that is
    /// not trusted. The peer when there is no entry, or when an entry read before the client's
    /// is not an address; the left-most entry when every one is a trusted proxy.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut entries = Vec::new();
        for value in forwarded_for {
            let Ok(value) = std::str::from_utf8(value) else {
                return peer;
            };
            entries.extend(value.split(','));
        }
        let mut client = None;
        for entry in entries.iter().rev().take(MAX_HOPS) {
            let Some(ip) = parse_entry(entry) else {
                return peer;
            };
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        client.unwrap_or(peer)
    }
}

/// An IPv4-mapped IPv6 address as its IPv4 address (a dual-stack listener reports those).
/// What a per-client limit counts under for `ip`: an IPv4 address itself; an IPv6 address's
/// /64 network, which one subscriber usually holds whole (counting each address would let a
/// client rotate through 2^64 of them).
pub fn limit_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`), as
/// some proxies write it; `None` for anything else (`unknown`, an obfuscated identifier).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })?;
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn client(proxies: &TrustedProxies, peer: &str, headers: &[&str]) -> IpAddr {
        proxies.client_ip(ip(peer), headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn limits_count_ipv6_clients_by_their_64() {
        assert_eq!(limit_key(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_key(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            limit_key(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
    }

    /// Review finding: `0.0.0.0/0` was accepted, which makes every peer a proxy whose
    /// `X-Forwarded-For` is believed: any client could name its own address.
    #[test]
    fn a_range_of_every_address_is_refused() {
        for all in ["0.0.0.0/0", "::/0", "10.0.0.1, 0.0.0.0/0"] {
            let e = TrustedProxies::parse(all).unwrap_err();
            assert!(e.contains("trusts every address"), "{all}: {e}");
        }
        assert!(TrustedProxies::parse("0.0.0.0/1").is_ok());
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_sends() {
        let none = TrustedProxies::none();
        assert!(none.is_empty());
        assert_eq!(client(&none, "203.0.113.7", &[]), ip("203.0.113.7"));
        // A client making up its own header gains nothing.
        assert_eq!(
            client(&none, "203.0.113.7", &["198.51.100.1", "10.0.0.1, 1.1.1.1"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() {
        let p = TrustedProxies::parse("10.0.0.0/8, 192.168.1.5 ,::1").unwrap();
        // One proxy: it appended the client.
        assert_eq!(client(&p, "10.1.2.3", &["203.0.113.7"]), ip("203.0.113.7"));
        // Two trusted proxies in a chain: skipped.
        assert_eq!(
            client(&p, "10.1.2.3", &["203.0.113.7, 192.168.1.5"]),
            ip("203.0.113.7")
        );
        // The client's own header comes first: what it wrote is left of what the proxy wrote,
        // so a made-up address (even a trusted one) is never taken.
        for spoof in [
            "198.51.100.1",
            "10.9.9.9",
            "garbage",
            "198.51.100.1, 10.0.0.7",
        ] {
            assert_eq!(
                client(&p, "10.1.2.3", &[&format!("{spoof}, 203.0.113.7")]),
                ip("203.0.113.7"),
                "{spoof}"
            );
        }
        // Several header lines are one list, in order.
        assert_eq!(
            client(&p, "10.1.2.3", &["198.51.100.1", "203.0.113.7"]),
            ip("203.0.113.7")
        );
        // Ports and brackets, as some proxies write them; IPv6 peers.
        assert_eq!(client(&p, "::1", &["203.0.113.7:4711"]), ip("203.0.113.7"));
        assert_eq!(client(&p, "::1", &["[2001:db8::5]:443"]), ip("2001:db8::5"));
        assert_eq!(client(&p, "::1", &["[2001:db8::5]"]), ip("2001:db8::5"));
        // A dual-stack listener reports an IPv4 proxy as an IPv4-mapped address.
        assert_eq!(
            client(&p, "::ffff:10.1.2.3", &["203.0.113.7"]),
            ip("203.0.113.7")
        );
        // Every entry a proxy: the farthest one.
        assert_eq!(
            client(&p, "10.1.2.3", &["10.0.0.2, 10.0.0.1"]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn a_malformed_or_missing_header_behind_a_trusted_proxy_is_the_peer() {
        let p = TrustedProxies::parse("10.0.0.0/8").unwrap();
        for header in [
            "",
            " ",
            "unknown",
            "203.0.113.7, nonsense",
            "203.0.113.7,",
            "_hidden",
        ] {
            assert_eq!(
                client(&p, "10.1.2.3", &[header]),
                ip("10.1.2.3"),
                "{header:?}"
            );
        }
        assert_eq!(client(&p, "10.1.2.3", &[]), ip("10.1.2.3"));
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), [&b"\xff203.0.113.7"[..]]),
            ip("10.1.2.3"),
            "not UTF-8"
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_borrow_a_trusted_address() {
        let p = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // Straight from the internet, claiming to be behind the proxy: its own address.
        assert_eq!(
            client(&p, "203.0.113.66", &["198.51.100.1, 10.0.0.1"]),
            ip("203.0.113.66")
        );
    }

    #[test]
    fn the_list_is_addresses_and_ranges_only() {
        assert_eq!(TrustedProxies::parse("").unwrap(), TrustedProxies::none());
        assert_eq!(
            TrustedProxies::parse(" , ").unwrap(),
            TrustedProxies::none()
        );
        assert!(TrustedProxies::parse("10.0.0.0/8,fd00::/8").is_ok());
        for bad in [
            "proxy.internal",
            "10.0.0.0/33",
            "10.0.0.0/x",
            "::1/129",
            "1.2.3",
        ] {
            let e = TrustedProxies::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
