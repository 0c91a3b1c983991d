//! SSRF address classes, including IPv4 carried inside IPv6.
use std::net::IpAddr;

use bottle_proxy::canon::canonical_host;
use bottle_proxy::ssrf::{classify, embedded_ipv4, AddrClass};

fn class(s: &str) -> AddrClass {
    classify(
        s.parse::<IpAddr>()
            .unwrap_or_else(|_| panic!("bad test address {s}")),
    )
}

#[test]
fn ipv4_classes() {
    use AddrClass::*;
    for (addr, want) in [
        ("8.8.8.8", Public),
        ("1.1.1.1", Public),
        ("140.82.112.3", Public),
        ("127.0.0.1", Loopback),
        ("127.255.255.254", Loopback),
        ("0.0.0.0", Unspecified),
        ("0.1.2.3", Reserved),
        ("10.1.2.3", Private),
        ("172.16.0.1", Private),
        ("172.17.0.1", Private),
        ("172.31.255.255", Private),
        ("172.32.0.1", Public),
        ("192.168.1.1", Private),
        ("169.254.1.1", LinkLocal),
        ("169.254.169.254", Metadata),
        ("100.100.100.200", Metadata),
        ("192.0.0.192", Metadata),
        ("168.63.129.16", Metadata),
        ("100.64.0.1", Cgnat),
        ("100.127.255.255", Cgnat),
        ("100.128.0.1", Public),
        ("224.0.0.1", Multicast),
        ("239.255.255.250", Multicast),
        ("255.255.255.255", Broadcast),
        ("240.0.0.1", Reserved),
        ("192.0.2.1", Documentation),
        ("198.51.100.7", Documentation),
        ("203.0.113.9", Documentation),
        ("198.18.0.1", Reserved),
        ("192.0.0.8", Reserved),
    ] {
        assert_eq!(class(addr), want, "{addr}");
    }
}

#[test]
fn ipv6_classes_and_embedded_ipv4() {
    use AddrClass::*;
    for (addr, want) in [
        ("2606:4700::1111", Public),
        ("2a00:1450:4001::200e", Public),
        ("::1", Loopback),
        ("::", Unspecified),
        ("fe80::1", LinkLocal),
        ("fc00::1", UniqueLocal),
        ("fd12:3456::1", UniqueLocal),
        ("fd00:ec2::254", Metadata),
        ("ff02::1", Multicast),
        ("2001:db8::1", Documentation),
        ("3fff::1", Documentation),
        ("100::1", Reserved),
        ("4000::1", Reserved),
        ("fec0::1", Private),
        // IPv4-mapped
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:169.254.169.254", Metadata),
        ("::ffff:8.8.8.8", Public),
        // IPv4-compatible
        ("::127.0.0.1", Loopback),
        ("::a9fe:a9fe", Metadata),
        // NAT64 well-known and local-use prefixes
        ("64:ff9b::a9fe:a9fe", Metadata),
        ("64:ff9b::7f00:1", Loopback),
        ("64:ff9b::808:808", Public),
        ("64:ff9b:1:7f00:0:100::", Loopback), // RFC 6052 /48 layout of 127.0.0.1
        ("64:ff9b:1::a00:1", Private),        // /96 layout inside the /48
        // 6to4
        ("2002:7f00:1::", Loopback),
        ("2002:a9fe:a9fe::1", Metadata),
        ("2002:c0a8:101::", Private),
        ("2002:808:808::", Public),
        // Teredo: client = inverted low 32 bits; server in bits 32..64
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback), // client !0x80fffffe = 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Private),  // client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public),   // client 8.8.8.8, server 65.54.227.120
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", Private),      // server 10.0.0.1
    ] {
        assert_eq!(class(addr), want, "{addr}");
    }
}

#[test]
fn embedded_addresses_are_extracted() {
    let v6 = |s: &str| s.parse().unwrap();
    assert_eq!(
        embedded_ipv4(v6("::ffff:1.2.3.4")),
        vec!["1.2.3.4".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(
        embedded_ipv4(v6("2002:102:304::")),
        vec!["1.2.3.4".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert!(embedded_ipv4(v6("2606:4700::1111")).is_empty());
    assert!(embedded_ipv4(v6("::1")).is_empty());
}

#[test]
fn every_literal_notation_of_loopback_is_loopback() {
    for host in [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "017700000001",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[2002:7f00:1::]",
        "[64:ff9b::7f00:1]",
    ] {
        let ip = canonical_host(host).unwrap().as_ip().unwrap();
        assert_eq!(classify(ip), AddrClass::Loopback, "{host}");
        assert!(!classify(ip).is_public());
    }
}

#[test]
fn codes_are_snake_case() {
    assert_eq!(AddrClass::LinkLocal.code(), "link_local");
    assert_eq!(AddrClass::UniqueLocal.code(), "unique_local");
    assert_eq!(AddrClass::Metadata.to_string(), "metadata");
    assert!(AddrClass::Public.is_public());
    assert!(!AddrClass::Cgnat.is_public());
}
