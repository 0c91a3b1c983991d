//! SSRF floor: classification of IP addresses into public and private classes.
//!
//! Every address a route would dial (an IP-literal target or each DNS answer)
//! is classified with [`classify`]; anything but [`AddrClass::Public`] is
//! refused unless the route's `allow_private` covers it
//! ([`crate::policy::Route::allows_private`]).
//!
//! IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
//! IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`,
//! 6to4 `2002::/16`, Teredo `2001::/32`) are judged by the embedded IPv4
//! address, because that is where the packets end up.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The class of an address, as far as egress policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddrClass {
    /// Globally routable unicast.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`) and deprecated IPv6 site-local `fec0::/10`.
    Private,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT `100.64.0.0/10`.
    Cgnat,
    /// IPv6 unique local `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Cloud metadata endpoints: `169.254.169.254`, `fd00:ec2::254`,
    /// `100.100.100.200` (Alibaba), `192.0.0.192` (Oracle), `168.63.129.16` (Azure).
    Metadata,
    /// Documentation ranges (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`).
    Documentation,
    /// Everything else that is not globally routable (`0/8`, `240/4`, `198.18/15`,
    /// `192.0.0/24`, IPv6 outside `2000::/3`, discard-only `100::/64`, ORCHID ...).
    Reserved,
}

impl AddrClass {
    /// True only for [`AddrClass::Public`].
    pub fn is_public(self) -> bool {
        self == AddrClass::Public
    }

    /// Stable snake_case name for audit records and deny details.
    pub fn code(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link_local",
            AddrClass::Cgnat => "cgnat",
            AddrClass::UniqueLocal => "unique_local",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Metadata => "metadata",
            AddrClass::Documentation => "documentation",
            AddrClass::Reserved => "reserved",
        }
    }
}

impl std::fmt::Display for AddrClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Cloud metadata addresses (IPv4).
const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(168, 63, 129, 16),
];

/// AWS IMDS over IPv6.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Classifies an address (see the module docs).
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    if METADATA_V4.contains(&ip) {
        return AddrClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_broadcast() {
        return AddrClass::Broadcast;
    }
    let table: &[([u8; 4], u32, AddrClass)] = &[
        ([0, 0, 0, 0], 8, AddrClass::Reserved),
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([100, 64, 0, 0], 10, AddrClass::Cgnat),
        ([192, 0, 0, 0], 24, AddrClass::Reserved),
        ([192, 0, 2, 0], 24, AddrClass::Documentation),
        ([198, 51, 100, 0], 24, AddrClass::Documentation),
        ([203, 0, 113, 0], 24, AddrClass::Documentation),
        ([192, 88, 99, 0], 24, AddrClass::Reserved),
        ([198, 18, 0, 0], 15, AddrClass::Reserved),
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved),
    ];
    for (net, prefix, class) in table {
        if in_v4(ip, *net, *prefix) {
            return *class;
        }
    }
    AddrClass::Public
}

fn v4_from_bits(bits: u128, shift: u32) -> Ipv4Addr {
    Ipv4Addr::from(((bits >> shift) & 0xffff_ffff) as u32)
}

/// The IPv4 addresses an IPv6 address carries, by the transition mechanisms
/// listed in the module docs (empty if none). Teredo yields the client address
/// first, then the server address.
pub fn embedded_ipv4(v6: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = u128::from(v6);
    let seg = v6.segments();
    // ::ffff:a.b.c.d (mapped)
    if bits >> 32 == 0xffff {
        return vec![v4_from_bits(bits, 0)];
    }
    // ::a.b.c.d (compatible, deprecated); :: and ::1 are not embeddings.
    if bits >> 32 == 0 && bits > 1 {
        return vec![v4_from_bits(bits, 0)];
    }
    // 64:ff9b::/96 (well-known NAT64 prefix)
    if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        return vec![v4_from_bits(bits, 0)];
    }
    // 64:ff9b:1::/48 (local-use NAT64, RFC 8215): RFC 6052 /48 layout
    // (v4 in bits 48..64 and 72..88), and the common /96 layout too.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 0x0001 {
        let hi = u32::from(seg[3]) << 16;
        let lo = (u32::from(seg[4]) & 0x00ff) << 8 | (u32::from(seg[5]) >> 8);
        let layouts = [Ipv4Addr::from(hi | lo), v4_from_bits(bits, 0)];
        // An all-zero reading is the unused part of the other layout.
        let used: Vec<Ipv4Addr> = layouts
            .iter()
            .copied()
            .filter(|a| !a.is_unspecified())
            .collect();
        return if used.is_empty() {
            vec![Ipv4Addr::UNSPECIFIED]
        } else {
            used
        };
    }
    // 2002::/16 (6to4): v4 in bits 16..48
    if seg[0] == 0x2002 {
        return vec![v4_from_bits(bits, 80)];
    }
    // 2001::/32 (Teredo): server in bits 32..64, client = inverted low 32 bits
    if seg[0] == 0x2001 && seg[1] == 0 {
        let client = Ipv4Addr::from(!((bits & 0xffff_ffff) as u32));
        return vec![client, v4_from_bits(bits, 64)];
    }
    Vec::new()
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if ip == METADATA_V6 {
        return AddrClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    let embedded = embedded_ipv4(ip);
    if !embedded.is_empty() {
        // The worst class of any carried address wins.
        return embedded
            .into_iter()
            .map(classify_v4)
            .find(|c| !c.is_public())
            .unwrap_or(AddrClass::Public);
    }
    let bits = u128::from(ip);
    let in_net = |net: u128, prefix: u32| -> bool {
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        bits & mask == net & mask
    };
    let table: &[(u128, u32, AddrClass)] = &[
        (0xff00 << 112, 8, AddrClass::Multicast),
        (0xfe80 << 112, 10, AddrClass::LinkLocal),
        (0xfec0 << 112, 10, AddrClass::Private),
        (0xfc00 << 112, 7, AddrClass::UniqueLocal),
        (0x2001_0db8 << 96, 32, AddrClass::Documentation),
        (0x3fff << 112, 20, AddrClass::Documentation),
        (0x0100 << 112, 64, AddrClass::Reserved),
        (0x2001_0010 << 96, 28, AddrClass::Reserved),
        (0x2001_0020 << 96, 28, AddrClass::Reserved),
    ];
    for (net, prefix, class) in table {
        if in_net(*net, *prefix) {
            return *class;
        }
    }
    // Only 2000::/3 is global unicast.
    if !in_net(0x2000 << 112, 3) {
        return AddrClass::Reserved;
    }
    AddrClass::Public
}
