//! Object names and the `io.bottle.*` labels every bottle object carries.
use std::collections::HashMap;

/// Label carrying the bottle id; present on every object of a bottle.
pub const ID: &str = "io.bottle.id";
/// Label naming the object's role: `sidecar`, `agent`, `model`, `internal`, `egress`.
pub const ROLE: &str = "io.bottle.role";
/// Label carrying the bottle (manifest) name.
pub const BOTTLE: &str = "io.bottle.bottle";
/// Label carrying a model sidecar's name (on model containers only).
pub const MODEL: &str = "io.bottle.model";
/// Label carrying the agent name.
pub const AGENT: &str = "io.bottle.agent";
/// Label carrying the pid of the launcher that owns the bottle.
pub const LAUNCHER_PID: &str = "io.bottle.launcher-pid";
/// Label carrying the launcher's process start time (clock ticks since boot), so a reused
/// pid is not mistaken for a live launcher.
pub const LAUNCHER_START: &str = "io.bottle.launcher-start";
/// Label carrying the run mode (`start` or `run`).
pub const MODE: &str = "io.bottle.mode";
/// Number of egress routes of the bottle's policy (for `bottle list`).
pub const ROUTES: &str = "io.bottle.routes";
/// A spawned bottle's display label (`bottle spawn --label`).
pub const LABEL: &str = "io.bottle.label";
/// Its display colour (`bottle spawn --color`).
pub const COLOR: &str = "io.bottle.color";

/// A fresh random bottle id: 12 lower-case hex characters.
pub fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Whether `s` looks like a bottle id (guards names built from user input).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// The labels shared by every object of one bottle.
#[derive(Debug, Clone)]
pub struct BottleLabels {
    /// Bottle id.
    pub id: String,
    /// Bottle (manifest) name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// `start` or `run`.
    pub mode: String,
    /// Extra labels from the manifest (never secret).
    pub extra: HashMap<String, String>,
}

impl BottleLabels {
    /// The label map for an object with the given role.
    pub fn for_role(&self, role: &str) -> HashMap<String, String> {
        let mut m = self.extra.clone();
        m.insert(ID.into(), self.id.clone());
        m.insert(ROLE.into(), role.into());
        m.insert(BOTTLE.into(), self.bottle.clone());
        m.insert(AGENT.into(), self.agent.clone());
        m.insert(MODE.into(), self.mode.clone());
        m.insert(LAUNCHER_PID.into(), std::process::id().to_string());
        if let Some(start) = process_start_ticks(std::process::id()) {
            m.insert(LAUNCHER_START.into(), start.to_string());
        }
        m
    }
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`); none
/// for a process that does not exist or has exited and not been reaped yet (a zombie: a
/// SIGKILLed supervisor whose parent is gone can stay one for a while).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after the last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z") | Some("X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the launcher identified by these labels is still alive.
pub fn launcher_alive(labels: &HashMap<String, String>) -> bool {
    let Some(pid) = labels.get(LAUNCHER_PID).and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    match (
        process_start_ticks(pid),
        labels
            .get(LAUNCHER_START)
            .and_then(|s| s.parse::<u64>().ok()),
    ) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Container / network names of a bottle.
pub fn name(id: &str, role: &str) -> String {
    format!("bottle-{id}-{role}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_unique() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 12);
        assert!(is_valid_id(&a));
        assert_ne!(a, b);
        assert!(!is_valid_id("../x"));
        assert!(!is_valid_id(""));
    }

    #[test]
    fn own_process_is_alive_and_dead_pid_is_not() {
        let l = BottleLabels {
            id: "ab".into(),
            bottle: "b".into(),
            agent: "a".into(),
            mode: "run".into(),
            extra: HashMap::new(),
        }
        .for_role("agent");
        assert!(launcher_alive(&l));
        let mut dead = l.clone();
        dead.insert(LAUNCHER_START.into(), "1".into());
        assert!(!launcher_alive(&dead));
        let mut gone = l;
        gone.insert(LAUNCHER_PID.into(), "999999999".into());
        assert!(!launcher_alive(&gone));
    }
}
