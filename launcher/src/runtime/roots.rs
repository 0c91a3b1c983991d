//! The CA bundle the agent trusts (the agent image's own roots plus the bottle CA) and the
//! agent's `/etc/passwd` and `/etc/group`: pure text assembly. The image's files are read by
//! [`crate::runtime::docker::images::image_files`].

/// Where Debian-family images keep their bundle (mounted over by the bottle bundle).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `/etc/passwd` and `/etc/group` for the agent: the image's entries plus user `agent`
/// with the given uid/gid and home (replacing any entry with that uid or name).
pub fn passwd_group(passwd: &str, group: &str, uid: u32, gid: u32, home: &str) -> (String, String) {
    let mut p: String = passwd
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() < 3 || (f[0] != "agent" && f[2] != uid.to_string())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    p.push_str(&format!(
        "agent:x:{uid}:{gid}:bottle agent:{home}:/bin/bash\n"
    ));
    let has_gid = group
        .lines()
        .any(|l| l.split(':').nth(2) == Some(gid.to_string().as_str()));
    let mut g: String = group.lines().map(|l| format!("{l}\n")).collect();
    if !has_gid {
        g.push_str(&format!("agent:x:{gid}:\n"));
    }
    (p, g)
}

/// The bundle mounted over the system path: image roots, then the bottle CA.
pub fn bundle(image_roots: &str, bottle_ca_pem: &str) -> String {
    let mut s = image_roots.trim_end().to_string();
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(bottle_ca_pem.trim_end());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwd_adds_agent_and_drops_clashes() {
        let (p, g) = super::passwd_group(
            "root:x:0:0::/root:/bin/bash\nold:x:1000:1000::/h:/bin/sh\n",
            "root:x:0:\n",
            1000,
            1000,
            "/home/agent",
        );
        assert_eq!(
            p,
            "root:x:0:0::/root:/bin/bash\nagent:x:1000:1000:bottle agent:/home/agent:/bin/bash\n"
        );
        assert_eq!(g, "root:x:0:\nagent:x:1000:\n");
        let (_, g) = super::passwd_group("", "staff:x:1000:\n", 1000, 1000, "/h");
        assert_eq!(g, "staff:x:1000:\n");
    }

    #[test]
    fn bundle_appends_ca() {
        assert_eq!(super::bundle("A\n\n", "B"), "A\nB\n");
        assert_eq!(super::bundle("", "B\n"), "B\n");
    }
}
