//! Resident memory of a process and all its descendants, read from `/proc`.

use std::collections::HashMap;
use std::fs;

use anyhow::{bail, Context, Result};

/// Memory of a process tree at one instant, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeMem {
    /// Sum of `VmRSS` over the tree.
    pub rss_kb: u64,
    /// Sum of `VmHWM` (each process's own peak) over the tree.
    pub hwm_kb: u64,
    /// Number of processes in the tree.
    pub procs: usize,
}

/// Reads `VmRSS`/`VmHWM` of `root` and every descendant.
pub fn tree_mem(root: u32) -> Result<TreeMem> {
    let pids = tree_pids(root)?;
    let mut mem = TreeMem::default();
    for pid in pids {
        // A process may exit between listing and reading: skip it.
        let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        mem.rss_kb += status_field_kb(&status, "VmRSS:").unwrap_or(0);
        mem.hwm_kb += status_field_kb(&status, "VmHWM:").unwrap_or(0);
        mem.procs += 1;
    }
    if mem.procs == 0 {
        bail!("process {root} does not exist (did the proxy exit? check its log in bench/out)");
    }
    Ok(mem)
}

/// `root` and all its descendants.
fn tree_pids(root: u32) -> Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").context("cannot list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(ppid) = stat_ppid(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids.iter().copied());
        }
        i += 1;
    }
    Ok(out)
}

/// The parent pid from a `/proc/PID/stat` line (the command name may contain
/// spaces and parentheses, so parse after the last `)`).
fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `Name:   1234 kB` field of `/proc/PID/status`.
fn status_field_kb(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ppid_with_odd_command_names() {
        assert_eq!(stat_ppid("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(stat_ppid("garbage"), None);
    }

    #[test]
    fn parses_status_fields() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_field_kb(s, "VmRSS:"), Some(1024));
        assert_eq!(status_field_kb(s, "VmHWM:"), Some(2048));
        assert_eq!(status_field_kb(s, "VmSwap:"), None);
    }

    #[test]
    fn own_process_has_memory() {
        let mem = tree_mem(std::process::id()).unwrap();
        assert!(mem.rss_kb > 0 && mem.procs >= 1);
    }
}
