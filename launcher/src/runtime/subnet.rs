//! Carving small, explicit subnets for bottle networks out of a configurable pool, so that
//! bottles do not exhaust the engine's default address pools (about 30 bridge networks).
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

/// Default pool for bottle networks.
pub const DEFAULT_POOL: &str = "10.213.0.0/16";
/// Prefix length of one bottle network.
pub const PREFIX: u8 = 28;

/// The pool from `BOTTLE_SUBNET_POOL`, or the default.
pub fn pool_from_env() -> Result<Ipv4Net> {
    let raw = crate::settings::current()
        .subnet_pool()
        .unwrap_or_else(|| DEFAULT_POOL.into());
    let pool: Ipv4Net = raw.trim().parse().with_context(|| {
        format!(
            "BOTTLE_SUBNET_POOL={raw:?} is not an IPv4 CIDR like {DEFAULT_POOL}; fix or unset it"
        )
    })?;
    if pool.prefix_len() > PREFIX {
        bail!("BOTTLE_SUBNET_POOL={raw} is smaller than one /{PREFIX}; use e.g. {DEFAULT_POOL}");
    }
    Ok(pool.trunc())
}

/// Free /28 subnets of `pool` that overlap none of `used`, starting at a pseudo-random
/// offset (so concurrent launchers rarely race for the same one), wrapping around.
pub fn free_subnets(pool: Ipv4Net, used: &[Ipv4Net], seed: u64) -> Vec<Ipv4Net> {
    free_subnets_of(pool, PREFIX, used, seed)
}

/// Like [`free_subnets`] for any prefix length.
pub fn free_subnets_of(pool: Ipv4Net, prefix: u8, used: &[Ipv4Net], seed: u64) -> Vec<Ipv4Net> {
    let all: Vec<Ipv4Net> = match pool.subnets(prefix) {
        Ok(s) => s.collect(),
        Err(_) => return Vec::new(),
    };
    if all.is_empty() {
        return all;
    }
    let start = (seed % all.len() as u64) as usize;
    all[start..]
        .iter()
        .chain(all[..start].iter())
        .filter(|n| !used.iter().any(|u| overlaps(n, u)))
        .copied()
        .collect()
}

/// Whether two IPv4 networks share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The `n`-th host address of a subnet (1 = first after the network address).
pub fn host(net: &Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_used_ranges_and_wraps() {
        let pool: Ipv4Net = "10.9.0.0/26".parse().unwrap(); // four /28s
        let used: Vec<Ipv4Net> = vec![
            "10.9.0.16/28".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(
            free_subnets(pool, &used, 0).is_empty(),
            "a covering /8 uses everything"
        );
        let used: Vec<Ipv4Net> = vec!["10.9.0.16/28".parse().unwrap()];
        let free = free_subnets(pool, &used, 2);
        let s: Vec<String> = free.iter().map(|n| n.to_string()).collect();
        assert_eq!(s, ["10.9.0.32/28", "10.9.0.48/28", "10.9.0.0/28"]);
    }

    #[test]
    fn hosts_and_overlap() {
        let n: Ipv4Net = "10.213.4.16/28".parse().unwrap();
        assert_eq!(host(&n, 2).to_string(), "10.213.4.18");
        assert!(overlaps(&n, &"10.213.0.0/16".parse().unwrap()));
        assert!(!overlaps(&n, &"10.213.4.32/28".parse().unwrap()));
    }
}
