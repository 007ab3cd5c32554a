//! The outbound target policy.
//!
//! Every address a user can make the service connect to goes through [`TargetPolicy`]: the
//! adapter resolves the host once, checks every resolved address here, then connects to a
//! checked address (never resolving again). Loopback, private, link-local, cloud metadata,
//! carrier-grade NAT, multicast, documentation and other special ranges are refused unless
//! the operator allow-lists them (`BYOK_ALLOWED_TARGETS`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a target was refused. Messages name the host, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("endpoint must be an http(s) URL with a host")]
    InvalidUrl,
    /// The reason is kept for the log; the message (what clients see) is the same for every
    /// refusal, so the policy cannot be used to map internal names and ranges.
    #[error("endpoint host {host} is not an allowed target (private, reserved or unresolvable)")]
    Forbidden { host: String, reason: &'static str },
    #[error("endpoint host {host} is not an allowed target (private, reserved or unresolvable)")]
    Unresolvable { host: String },
}

/// One operator allow-list entry: an address range, or an exact host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    Cidr { network: IpAddr, prefix: u8 },
    Host(String),
}

impl FromStr for AllowRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty allow-list entry".into());
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        match addr.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    Some(p) => p
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= max)
                        .ok_or_else(|| format!("bad prefix length in '{s}'"))?,
                    None => max,
                };
                Ok(AllowRule::Cidr {
                    network: ip,
                    prefix,
                })
            }
            Err(_) if prefix.is_none() && is_hostname(s) => {
                Ok(AllowRule::Host(s.to_ascii_lowercase()))
            }
            Err(_) => Err(format!(
                "'{s}' is neither an address, a CIDR range nor a host"
            )),
        }
    }
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `ip` is in `network/prefix` (an IPv4 address is never in an IPv6 range).
pub(crate) fn in_cidr(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The reason an address is special, or `None` for a public unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let table: &[(Ipv4Addr, u8, &'static str)] = &[
        (Ipv4Addr::new(0, 0, 0, 0), 8, "unspecified"),
        (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
        (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT"),
        (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
        (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local / metadata"),
        (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
        (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
        (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
        (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay"),
        (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
        (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
        (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
        (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
        (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
        (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
    ];
    if o == [100, 100, 100, 200] {
        return Some("metadata");
    }
    table
        .iter()
        .find(|(net, p, _)| in_cidr(IpAddr::V4(ip), IpAddr::V4(*net), *p))
        .map(|(_, _, why)| *why)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4).or(Some("IPv4-mapped"));
    }
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address; judge that address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        return Some("NAT64 local-use");
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return special_v4(v4);
    }
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return special_v4(v4).or(Some("6to4"));
    }
    let table: &[(Ipv6Addr, u8, &'static str)] = &[
        (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
        (Ipv6Addr::LOCALHOST, 128, "loopback"),
        (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible"),
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, "discard"),
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo"),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "documentation",
        ),
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "unique local (private)",
        ),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
    ];
    table
        .iter()
        .find(|(net, p, _)| in_cidr(IpAddr::V6(ip), IpAddr::V6(*net), *p))
        .map(|(_, _, why)| *why)
}

/// Which outbound addresses user-supplied targets may reach.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow: Vec<AllowRule>,
}

impl TargetPolicy {
    /// A policy that refuses special addresses except those `allow` lets through.
    pub fn new(allow: Vec<AllowRule>) -> Self {
        Self { allow }
    }

    /// Parses a comma-separated allow-list (`BYOK_ALLOWED_TARGETS`).
    pub fn parse(list: &str) -> Result<Self, String> {
        let allow = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(AllowRule::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allow })
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allow
            .iter()
            .any(|r| matches!(r, AllowRule::Host(h) if h.eq_ignore_ascii_case(host)))
    }

    fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(
            |r| matches!(r, AllowRule::Cidr { network, prefix } if in_cidr(ip, *network, *prefix)),
        )
    }

    /// Checks the addresses `host` resolved to. All must pass: a host that resolves to one
    /// public and one private address is refused (DNS rebinding would pick either).
    pub fn check(&self, host: &str, resolved: &[IpAddr]) -> Result<(), TargetError> {
        if resolved.is_empty() {
            return Err(TargetError::Unresolvable {
                host: host.to_string(),
            });
        }
        if self.host_allowed(host) {
            return Ok(());
        }
        for ip in resolved {
            if self.ip_allowed(*ip) {
                continue;
            }
            if let Some(reason) = special_range(*ip) {
                return Err(TargetError::Forbidden {
                    host: host.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_special_ranges_by_default() {
        let p = TargetPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "64:ff9b:1::a00:1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "224.0.0.1",
        ] {
            assert!(p.check("h", &[ip(bad)]).is_err(), "{bad} should be refused");
        }
        assert!(p.check("h", &[ip("93.184.216.34")]).is_ok());
        assert!(p.check("h", &[ip("2606:4700::1111")]).is_ok());
        assert!(
            p.check("h", &[ip("93.184.216.34"), ip("10.0.0.1")])
                .is_err()
        );
        assert!(p.check("h", &[]).is_err());
    }

    #[test]
    fn allow_list_opens_ranges_and_hosts() {
        let p = TargetPolicy::parse("127.0.0.1/32, ::1, 10.0.0.0/8,ollama.internal").unwrap();
        assert!(p.check("x", &[ip("127.0.0.1")]).is_ok());
        assert!(p.check("x", &[ip("::ffff:127.0.0.1")]).is_ok());
        assert!(p.check("x", &[ip("127.0.0.2")]).is_err());
        assert!(p.check("x", &[ip("::1")]).is_ok());
        assert!(p.check("x", &[ip("10.200.0.1")]).is_ok());
        assert!(p.check("Ollama.Internal", &[ip("192.168.0.9")]).is_ok());
        assert!(TargetPolicy::parse("10.0.0.0/33").is_err());
        assert!(TargetPolicy::parse("not a host!").is_err());
    }
}
